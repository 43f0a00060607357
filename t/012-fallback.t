# Fallback: on connection errors, timeouts, 5xx, 429 and unreadable
# answers the request goes to the next provider serving the model, once
# per provider; provider client errors are passed on; when all fail, the
# answer names every provider tried.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config();
our $Yaml = ">>> helix.yaml\n$Helix::Providers";

our $Chat = 'POST /v1/chat/completions
{"model": "mock-shared", "messages": [{"role": "user", "content": "fall back please"}]}';

sub fault { my ($p, $json) = @_; return "POST /mock/$p/faults\n$json"; }

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a 500 from the first provider: the second answers
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", main::fault(openai => '{"status": 500, "count": 1}'), $::Chat, "GET /mock/openai/stats", "GET /mock/claude/stats"]
--- response_body_like eval
['ok', 'ok', '"content":"Mock answer [0-9a-f]+ to: fall back please', '"requests":\{"POST /v1/chat/completions":1\}', '"requests":\{"POST /v1/messages":1\}']
--- response_headers eval
["", "", "X-Helix-Provider: claude", "", ""]
--- error_log
helix: provider "openai" failed (outcome 1, status 500)



=== TEST 2: a 429 falls back too
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", main::fault(openai => '{"status": 429, "count": 1}'), $::Chat]
--- response_headers eval
["", "", "X-Helix-Provider: claude"]
--- error_code eval: [200, 200, 200]



=== TEST 3: connection refused: the next provider answers
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  dead:
    type: openai
    models: [mock-shared]
  gemini:
    type: gemini
    api_key: g
    models: [mock-shared]
--- request eval
$::Chat
--- response_headers
X-Helix-Provider: gemini
--- error_log
helix: provider "dead" failed (outcome 1, status 502): no answer (connection failed or cut)



=== TEST 4: a provider slower than its timeout is cut off and the next one answers
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    timeout: 300ms
    models: [mock-shared]
  claude:
    type: anthropic
    api_key: a
    models: [mock-shared]
--- request eval
["POST /mock/reset", main::fault(openai => '{"latency_ms": 3000, "count": 1}'), $::Chat]
--- response_headers eval
["", "", "X-Helix-Provider: claude"]
--- error_log
helix: provider "openai" timed out after 300 ms



=== TEST 5: unreadable 200 answers (HTML, truncated JSON, garbage, nothing) fall back, once per provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"malformed": "html", "count": 1}'), $::Chat,
 main::fault(openai => '{"malformed": "truncated", "count": 1}'), $::Chat,
 main::fault(openai => '{"malformed": "garbage", "count": 1}'), $::Chat,
 main::fault(openai => '{"malformed": "empty", "count": 1}'), $::Chat]
--- response_headers eval
["", "", "X-Helix-Provider: claude", "", "X-Helix-Provider: claude", "", "X-Helix-Provider: claude", "", "X-Helix-Provider: claude"]
--- error_log eval
[qr/provider "openai" failed \(outcome 1, status 200\): invalid answer: /]



=== TEST 6: a dropped connection falls back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", main::fault(openai => '{"drop": "before", "count": 1}'), $::Chat,
 main::fault(openai => '{"drop": "mid", "count": 1}'), $::Chat]
--- response_headers eval
["", "", "X-Helix-Provider: claude", "", "X-Helix-Provider: claude"]



=== TEST 7: every provider fails: 502 naming each one and why
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"status": 500, "count": 1}'),
 main::fault(claude => '{"status": 503, "count": 1}'),
 main::fault(gemini => '{"malformed": "html", "count": 1}'),
 $::Chat]
--- error_code eval: [200, 200, 200, 200, 502]
--- response_body_like eval
["", "", "", "", '^\{"error":\{"message":"all providers failed: openai \(HTTP 500: mock_provider injected error \(status 500\)\); claude \(HTTP 503: mock_provider injected error \(status 503\)\); gemini \(HTTP 200: invalid answer: not JSON[^"]*\)","type":"api_error","param":null,"code":"provider_error"\}\}$']



=== TEST 8: every provider times out: 504
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    timeout: 200ms
    models: [mock-shared]
  gemini:
    type: gemini
    api_key: g
    timeout: 200ms
    models: [mock-shared]
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"latency_ms": 3000, "count": 1}'),
 main::fault(gemini => '{"latency_ms": 3000, "count": 1}'),
 $::Chat]
--- error_code eval: [200, 200, 200, 504]
--- response_body_like eval
["", "", "", '"message":"all providers failed: openai \(timed out\); gemini \(timed out\)"']



=== TEST 9: the overall deadline (timeouts.provider_default) bounds the fallback
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
timeouts:
  provider_default: 400ms
providers:
  openai:
    type: openai
    timeout: 300ms
    models: [mock-shared]
  claude:
    type: anthropic
    api_key: a
    timeout: 5s
    models: [mock-shared]
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"latency_ms": 3000, "count": 1}'),
 main::fault(claude => '{"latency_ms": 3000, "count": 1}'),
 $::Chat]
--- error_code eval: [200, 200, 200, 504]
--- error_log eval
[qr/provider "claude" timed out after \d+ ms/]



=== TEST 10: a provider's own 400 is the client's error: passed on, named, no fallback
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", main::fault(openai => '{"status": 400, "count": 1}'), $::Chat, "GET /mock/claude/stats"]
--- error_code eval: [200, 200, 400, 200]
--- response_body_like eval
["", "", '^\{"error":\{"message":"provider \\\\"openai\\\\": [^"]+","type":"invalid_request_error","param":null,"code":"provider_error"\}\}$', '"total":0']



=== TEST 11: the explicit provider goes first, the others are its fallback
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", main::fault(gemini => '{"status": 500, "count": 1}'),
 'POST /v1/chat/completions
{"model": "mock-shared", "provider": "gemini", "messages": [{"role": "user", "content": "x"}]}']
--- response_headers eval
["", "", "X-Helix-Provider: openai"]



=== TEST 12: large embedding answers (several MB) arrive whole
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
"POST /v1/embeddings\n" . '{"model": "text-embedding-3-small", "input": [' . join(",", map { qq("text number $_") } 1..300) . ']}'
--- response_body_like: ^\{"object":"list","data":\[\{"object":"embedding","index":0,"embedding":\[.*"index":299,"embedding":\[[^\]]+\]\}\],"model":"text-embedding-3-small","usage":\{"prompt_tokens":\d+,"total_tokens":\d+\}\}$
--- timeout: 20



=== TEST 13: an answer over max_response_body is not served
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$::Helix::Providers\nresources:\n  requests:\n    max_response_body: 10KB\n"
--- request
POST /v1/embeddings
{"model": "text-embedding-3-small", "input": ["a", "b", "c"]}
--- error_code: 502
--- response_body_like: "all providers failed: openai \(HTTP 200: answer larger than max_response_body\)"
