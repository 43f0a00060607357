# Circuit breakers: closed -> open after N failures (or a failure ratio),
# requests skip an open provider, a half-open probe after the cooldown,
# closed again when it succeeds, open again when it fails.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(cache => 0);

our $Chat = 'POST /v1/chat/completions
{"model": "mock-shared", "messages": [{"role": "user", "content": "breaker"}]}';

sub fault { my ($p, $json) = @_; return "POST /mock/$p/faults\n$json"; }

# the cooldown is a lower bound: waiting past it can only be right
sub after { my ($secs, $req) = @_; return [{ value => $req, delay_before => $secs }]; }

no_shuffle();
run_tests();

__DATA__

=== TEST 1: two failures open the breaker; the next request skips the provider; /v1/health shows it
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    models: [mock-shared]
    circuit_breaker:
      failure_threshold: 2
      cooldown: 60s
  claude:
    type: anthropic
    api_key: a
    models: [mock-shared]
--- request eval
["POST /mock/reset", main::fault(openai => '{"status": 500, "count": 2}'),
 $::Chat, $::Chat, $::Chat, "GET /mock/openai/stats", "GET /v1/health"]
--- response_headers eval
["", "", "X-Helix-Provider: claude", "X-Helix-Provider: claude", "X-Helix-Provider: claude", "", ""]
--- response_body_like eval
["", "", "", "", "",
 '"total":2,',
 '^\{"providers":\[\{"name":"openai","type":"openai","enabled":true,"state":"open","inflight":0,"consecutive_failures":2,"requests":2,"failures":2,"opened":1,"retry_in_ms":\d+\},\{"name":"claude","type":"anthropic","enabled":true,"state":"closed","inflight":0,"consecutive_failures":0,"requests":3,"failures":0,"opened":0,"retry_in_ms":0\}\],"inflight":0,"status":"degraded"\}$']
--- error_log
helix: provider "openai" circuit breaker opened, half-open probe in 60000 ms



=== TEST 2: with every breaker open the answer is 503 with Retry-After from the cooldown
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    models: [mock-shared]
    circuit_breaker:
      failure_threshold: 1
      cooldown: 30s
--- request eval
["POST /mock/reset", main::fault(openai => '{"status": 503, "count": 1}'), $::Chat, $::Chat]
--- error_code eval: [200, 200, 502, 503]
--- response_headers eval
["", "", "", "Retry-After: 30"]
--- response_body_like eval
["", "", "", '^\{"error":\{"message":"no provider can take the request now: openai \(circuit breaker open\)","type":"api_error","param":null,"code":"providers_unavailable"\}\}$']



=== TEST 3: after the cooldown one probe goes through; its success closes the breaker
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    models: [mock-shared]
    circuit_breaker:
      failure_threshold: 1
      cooldown: 300ms
--- request eval
["POST /mock/reset", main::fault(openai => '{"status": 500, "count": 1}'), $::Chat, $::Chat,
 main::after(0.5, $::Chat), "GET /v1/health"]
--- error_code eval: [200, 200, 502, 503, 200, 200]
--- response_body_like eval
["", "", "", "", "", '"name":"openai","type":"openai","enabled":true,"state":"closed","inflight":0,"consecutive_failures":0,"requests":2,"failures":1,"opened":1']
--- error_log
helix: provider "openai" circuit breaker closed



=== TEST 4: a failed probe opens the breaker again
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    models: [mock-shared]
    circuit_breaker:
      failure_threshold: 1
      cooldown: 300ms
--- request eval
["POST /mock/reset", main::fault(openai => '{"status": 500, "count": 2}'), $::Chat,
 main::after(0.5, $::Chat), $::Chat, "GET /v1/health"]
--- error_code eval: [200, 200, 502, 502, 503, 200]
--- response_body_like eval
["", "", "", "", "", '"state":"open","inflight":0,"consecutive_failures":1,"requests":2,"failures":2,"opened":2']
--- error_log
circuit breaker opened again after a failed probe



=== TEST 5: a failure ratio over the window opens the breaker
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    models: [mock-shared]
    circuit_breaker:
      failure_threshold: 0
      failure_ratio: 0.5
      min_requests: 4
      window: 60s
      cooldown: 60s
  claude:
    type: anthropic
    api_key: a
    models: [mock-shared]
--- request eval
["POST /mock/reset",
 'POST /v1/chat/completions
{"model": "mock-shared", "provider": "openai", "messages": [{"role": "user", "content": "ok"}]}',
 'POST /v1/chat/completions
{"model": "mock-shared", "provider": "openai", "messages": [{"role": "user", "content": "ok"}]}',
 main::fault(openai => '{"status": 500, "count": 2}'), $::Chat, $::Chat, $::Chat,
 "GET /v1/health"]
--- response_headers eval
["", "X-Helix-Provider: openai", "X-Helix-Provider: openai", "", "X-Helix-Provider: claude", "X-Helix-Provider: claude", "X-Helix-Provider: claude", ""]
--- response_body_like eval
["", "", "", "", "", "", "", '"name":"openai","type":"openai","enabled":true,"state":"open","inflight":0,"consecutive_failures":2,"requests":4,"failures":2,"opened":1']
--- error_log
helix: provider "openai" circuit breaker opened
