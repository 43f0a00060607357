# API keys in the ACCESS phase: "Authorization: Bearer" and "x-api-key"
# against auth.keys; 401 in OpenAI's error shape for a missing or unknown
# key; the admin token is never an API key; health, metrics and admin
# endpoints do not ask for one.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(cache => 0, extra => <<'_EOC_');
    location = /metrics { helix_endpoint metrics; }
    location = /v1/admin/cache/clear { helix_endpoint cache_clear; }
_EOC_

our $Yaml = ">>> helix.yaml\n$Helix::Providers" . <<'_EOC_';
admin:
  token: adm1n-token-0123456789abcdef0123456789abcdef
auth:
  enabled: true
  keys:
    - name: team-a
      key: sk-team-a-0123456789abcdef0123456789abcdef
    - name: team-b
      key: ${HELIX_TEST_NO_SUCH_VAR:-sk-team-b-0123456789abcdef0123456789abcdef}
_EOC_

our $Chat = "POST /v1/chat/completions\n"
    . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "auth"}]}';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: no key: 401 in OpenAI's error shape
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval: $::Chat
--- error_code: 401
--- response_headers
Content-Type: application/json
--- response_body_like
^\{"error":\{"message":"no API key: send \\"Authorization: Bearer <key>\\" or \\"x-api-key: <key>\\"","type":"authentication_error","param":null,"code":"missing_api_key"\}\}$
--- no_error_log
[error]



=== TEST 2: an unknown key: 401
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers
Authorization: Bearer sk-team-c
--- request eval: $::Chat
--- error_code: 401
--- response_body_like
^\{"error":\{"message":"incorrect API key provided","type":"authentication_error","param":null,"code":"invalid_api_key"\}\}$



=== TEST 3: a key that is a prefix of a real one is not that key
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers
Authorization: Bearer sk-team-
--- request eval: $::Chat
--- error_code: 401



=== TEST 4: a good key as Bearer: the request goes through
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers
Authorization: Bearer sk-team-a-0123456789abcdef0123456789abcdef
--- request eval: $::Chat
--- error_code: 200
--- response_body_like
"object":"chat.completion"



=== TEST 5: a good key as x-api-key (Anthropic's clients), value from ${VAR:-default}
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers
x-api-key: sk-team-b-0123456789abcdef0123456789abcdef
--- request eval: $::Chat
--- error_code: 200
--- response_body_like
"object":"chat.completion"



=== TEST 6: the admin token is not an API key, neither as Bearer nor as x-api-key
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers eval
["Authorization: Bearer adm1n-token-0123456789abcdef0123456789abcdef", "x-api-key: adm1n-token-0123456789abcdef0123456789abcdef", "Authorization: Bearer adm1n-token-0123456789abcdef0123456789abcdef"]
--- request eval
[$::Chat, $::Chat, "POST /v1/admin/cache/clear\n{}"]
--- error_code eval
[401, 401, 200]



=== TEST 7: an API key does not open the admin endpoints
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers
Authorization: Bearer sk-team-a-0123456789abcdef0123456789abcdef
--- request
POST /v1/admin/cache/clear
{}
--- error_code: 403



=== TEST 8: /v1/models needs a key; health and metrics do not
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers eval
["", "Authorization: Bearer sk-team-a-0123456789abcdef0123456789abcdef", "", ""]
--- request eval
["GET /v1/models", "GET /v1/models", "GET /v1/health", "GET /metrics"]
--- error_code eval
[401, 200, 200, 200]



=== TEST 9: a scheme other than Bearer is no key
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers
Authorization: Basic c2stdGVhbS1hOg==
--- request eval: $::Chat
--- error_code: 401
--- response_body_like
"code":"missing_api_key"



=== TEST 10: a 401 to a large body: the body is discarded, not read into memory
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
"POST /v1/chat/completions\n" . ('x' x 300000)
--- error_code: 401
--- no_error_log
[error]



=== TEST 11: auth off (the demo): no key is asked for
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml\n$Helix::Providers"
--- request eval: $::Chat
--- error_code: 200
--- response_headers
!x-ratelimit-limit-requests



=== TEST 12: /metrics counts the requests turned away, by reason
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers eval
["", "Authorization: Bearer sk-wrong", "Authorization: Bearer sk-wrong", "Authorization: Bearer sk-team-a-0123456789abcdef0123456789abcdef", ""]
--- request eval
[$::Chat, $::Chat, $::Chat, $::Chat, "GET /metrics"]
--- error_code eval
[401, 401, 401, 200, 200]
--- response_body_like eval
["", "", "", "", 'helixagent_requests_rejected_total\{reason="missing_api_key"\} 1\nhelixagent_requests_rejected_total\{reason="invalid_api_key"\} 2\nhelixagent_requests_rejected_total\{reason="rate_limit_requests"\} 0\n']
