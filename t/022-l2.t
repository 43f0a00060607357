# L2 in Redis (the suite's own Redis, started by util/test.sh): answers
# outlive nginx, are promoted into L1, and Redis going away only costs L2.
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => "    location = /metrics { helix_endpoint metrics; }\n");

our $Yaml = ">>> helix.yaml\n$Helix::Providers" . <<"_EOC_";
cache:
  l2:
    enabled: true
    host: 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}
redis:
  pool:
    size: 2
    min_idle: 1
    timeout: 2s
_EOC_

our $Down = ">>> helix.yaml\n$Helix::Providers" . <<'_EOC_';
cache:
  l2:
    enabled: true
    host: 127.0.0.1:1
_EOC_

# unique per run: the suite's Redis lives as long as the run
our $Chat = "POST /v1/chat/completions\n"
    . qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "l2 run $$"}]});

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a miss is stored in L1 and L2
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[$::Chat, $::Chat]
--- response_headers eval
["X-Cache: MISS", "X-Cache: HIT\nX-Cache-Tier: L1"]
--- no_error_log
[error]



=== TEST 2: a new nginx (empty L1) answers from L2, promotes into L1, and the provider is not asked
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", $::Chat, $::Chat, "GET /mock/openai/stats"]
--- response_headers eval
["", "X-Cache: HIT\nX-Cache-Tier: L2\nX-Helix-Provider: openai", "X-Cache: HIT\nX-Cache-Tier: L1", ""]
--- response_body_like eval
["", '"object":"chat.completion"', '"object":"chat.completion"', '"total":0,']
--- no_error_log
[error]



=== TEST 3: Redis unreachable: answers go on from providers and L1, logged once
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Down
--- request eval
[$::Chat, $::Chat,
 "POST /v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "other"}]}',
 "POST /v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "another"}]}']
--- response_headers eval
["X-Cache: MISS", "X-Cache: HIT\nX-Cache-Tier: L1", "X-Cache: MISS", "X-Cache: MISS"]
--- grep_error_log eval: qr/redis 127.0.0.1:1 unreachable/
--- grep_error_log_out
redis 127.0.0.1:1 unreachable
