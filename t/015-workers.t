# Breakers and concurrency counters live in shared memory: every worker
# sees the same state.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use Helix;

master_on();
workers(2);

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(cache => 0);

our $Chat = 'POST /v1/chat/completions
{"model": "mock-shared", "messages": [{"role": "user", "content": "workers"}]}';

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a breaker opened by one worker is open in all of them
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
      cooldown: 60s
--- request eval
["POST /mock/reset", "POST /mock/openai/faults\n" . '{"status": 500, "count": 1}', $::Chat, $::Chat, $::Chat, $::Chat, $::Chat, $::Chat, "GET /mock/openai/stats"]
--- error_code eval: [200, 200, 502, 503, 503, 503, 503, 503, 200]
--- response_body_like eval
["", "", "", "", "", "", "", "", '"total":1,']



=== TEST 2: the counters are back at zero, seen from every worker
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers"
--- request eval
["POST /mock/reset", $::Chat, $::Chat, $::Chat, $::Chat, "GET /v1/health", "GET /v1/health", "GET /v1/health"]
--- response_body_like eval
["", "", "", "", "", '"inflight":0,"status":"ok"', '"inflight":0,"status":"ok"', '"inflight":0,"status":"ok"']
