# L2 in Redis (the suite's own Redis, started by util/test.sh): answers
# outlive nginx, are promoted into L1, and Redis going away only costs L2.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<'_EOC_');
    location = /metrics { helix_endpoint metrics; }
    location = /v1/admin/cache/clear { helix_endpoint cache_clear; }
_EOC_

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
admin:
  token: adm1n-0123456789abcdef0123456789abcdef
_EOC_

# something that accepts Redis connections and never answers
our $Silent = ">>> helix.yaml\n$Helix::Providers" . <<"_EOC_";
cache:
  l2:
    enabled: true
    host: 127.0.0.1:$ENV{TEST_NGINX_GEMINI_PORT}
redis:
  pool:
    timeout: 300ms
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
 "POST /v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "another"}]}',
 "GET /metrics"]
--- response_headers eval
["X-Cache: MISS", "X-Cache: HIT\nX-Cache-Tier: L1", "X-Cache: MISS", "X-Cache: MISS", ""]
--- response_body_like eval
["", "", "", "", 'helixagent_redis_connections 0\n.*helixagent_redis_errors_total\{kind="unreachable"\} [1-9]']
--- grep_error_log eval: qr/redis 127.0.0.1:1 unreachable/
--- grep_error_log_out
redis 127.0.0.1:1 unreachable



=== TEST 4: a clear by pattern removes the keys from both tiers, and says how many from each
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers eval
["", "Authorization: Bearer adm1n-0123456789abcdef0123456789abcdef"]
--- request eval
[$::Chat, "POST /v1/admin/cache/clear\n" . '{"pattern": "completion:openai:gpt-4o:*"}']
--- response_headers eval
["X-Cache: HIT\nX-Cache-Tier: L2", ""]
--- response_body_like eval
["", '^\{"removed":2,"tiers":\{"l1":1,"l2":1\},"pattern":"completion:openai:gpt-4o:\*"\}$']



=== TEST 5: after the clear, a new nginx misses in both tiers
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[$::Chat]
--- response_headers eval
["X-Cache: MISS"]



=== TEST 6: a Redis that never answers costs its timeout, not the answer
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Silent
--- request eval
["POST /v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "silent redis"}]}', "GET /metrics"]
--- response_headers eval
["X-Cache: MISS", ""]
--- response_body_like eval
["", 'helixagent_redis_errors_total\{kind="timeout"\} [1-9]']
--- error_log
redis did not answer within 300 ms



=== TEST 7: a connection idle past redis.pool.idle_timeout is closed (above min_idle)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml\n$Helix::Providers" . <<"_EOC_";
cache:
  l2:
    enabled: true
    host: 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}
redis:
  pool:
    size: 1
    min_idle: 0
    idle_timeout: 300ms
_EOC_
--- request eval
["POST /v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "idle"}]}', "GET /metrics"]
--- wait_for_log eval
[undef, "idle redis connection closed after 300 ms"]
--- response_body_like eval
["", 'helixagent_redis_connections 0\n']
