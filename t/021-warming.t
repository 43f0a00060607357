# cache.warming: once per nginx start (not per worker), after the workers
# are up, through the gateway's own endpoint; the first client request
# is a hit; a provider that is down costs a log line, not the start.
use Test::Nginx::Socket 'no_plan';
use Helix;

master_on();
workers(2);

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => "    location = /health { helix_endpoint health; }\n");

our $Warm = <<"_EOC_";
>>> helix.yaml
$Helix::Providers
  dead:
    type: openai
    models: [mock-shared]
cache:
  warming:
    enabled: true
    on_startup: true
    queries:
      - prompt: "Hello, how can I help?"
        providers: ["claude", "gemini"]
      - prompt: "What is HelixAgent?"
        providers: ["claude"]
_EOC_

no_shuffle();
run_tests();

__DATA__

=== TEST 1: warmed once, by one worker; the first client requests are hits
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Warm
--- wait_for_log eval
["cache warming done: 3 of 3 warmed", undef, undef, undef]
--- request eval
['POST /v1/completions
{"prompt": "Hello, how can I help?", "provider": "claude"}',
 'POST /v1/completions
{"provider": "gemini", "prompt": "Hello, how can I help?"}',
 'POST /v1/completions
{"prompt": "What is HelixAgent?", "provider": "claude"}',
 "GET /health"]
--- response_headers eval
["X-Cache: HIT\nX-Helix-Provider: claude", "X-Cache: HIT\nX-Helix-Provider: gemini", "X-Cache: HIT", ""]
--- response_body_like eval
['"object":"text_completion"', '"object":"text_completion"', '"object":"text_completion"', '"entries":3,"bytes":\d+,"hits":3,"misses":3,']
--- grep_error_log: cache warming through
--- grep_error_log_out
cache warming through



=== TEST 2: a provider that is down does not stop the start or the other queries
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
my $y = $::Warm; $y =~ s/providers: \["claude"\]/providers: ["dead"]/; $y
--- wait_for_log eval
["cache warming done: 2 of 3 warmed", undef]
--- request eval
["GET /health", 'POST /v1/completions
{"prompt": "Hello, how can I help?", "provider": "gemini"}']
--- response_headers eval
["", "X-Cache: HIT"]
--- error_log eval
[qr/cache warming \{"prompt":"What is HelixAgent\?","provider":"dead"\}: HTTP 502/]



=== TEST 3: cache entries are a tenant's: a query warms every tenant of auth.keys (two keys of one tenant: one call), or only the one it names
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
$::Warm . <<'_EOY_';
      - prompt: "Only for acme"
        providers: ["gemini"]
        tenant: acme
auth:
  enabled: true
  keys:
    - name: a1
      key: sk-warm-a1-0123456789abcdef0123456789abcdef
      tenant: acme
    - name: a2
      key: sk-warm-a2-0123456789abcdef0123456789abcdef
      tenant: acme
    - name: b
      key: sk-warm-b-0123456789abcdef0123456789abcdef
_EOY_
--- wait_for_log eval
["cache warming done: 7 of 7 warmed", undef, undef, undef, undef]
--- more_headers eval
["Authorization: Bearer sk-warm-a2-0123456789abcdef0123456789abcdef",
 "Authorization: Bearer sk-warm-b-0123456789abcdef0123456789abcdef",
 "Authorization: Bearer sk-warm-a1-0123456789abcdef0123456789abcdef",
 "Authorization: Bearer sk-warm-b-0123456789abcdef0123456789abcdef",
 "Authorization: Bearer sk-warm-b-0123456789abcdef0123456789abcdef"]
--- request eval
['POST /v1/completions
{"prompt": "What is HelixAgent?", "provider": "claude"}',
 'POST /v1/completions
{"prompt": "What is HelixAgent?", "provider": "claude"}',
 'POST /v1/completions
{"prompt": "Only for acme", "provider": "gemini"}',
 'POST /v1/completions
{"prompt": "Only for acme", "provider": "gemini"}',
 'POST /v1/completions
{"prompt": "Only for acme", "provider": "gemini"}']
--- response_headers eval
["X-Cache: HIT", "X-Cache: HIT", "X-Cache: HIT", "X-Cache: MISS", "X-Cache: HIT"]



=== TEST 4: a query's tenant must be one that a key has
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
$::Warm . <<'_EOY_';
        tenant: nobody
auth:
  keys:
    - name: a1
      key: sk-warm-a1-0123456789abcdef0123456789abcdef
_EOY_
--- must_die
--- error_log eval
qr/helix\.yaml:\d+: cache\.warming\.queries\[1\]: unknown tenant "nobody" \(no key in auth\.keys has it\)/
