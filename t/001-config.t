# helix.yaml: a good file, each kind of bad file, ${VAR} expansion, reload.
use Test::Nginx::Socket 'no_plan';

$ENV{HELIX_TEST_MODEL} = 'env-model-7';
delete $ENV{HELIX_TEST_UNSET};

our $HttpConfig = <<"_EOC_";
    helix_config ../html/helix.yaml;
    helix_loopback 127.0.0.1:$ENV{TEST_NGINX_SERVER_PORT};
_EOC_

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the guide's blocks load, and /v1/models lists every provider's models
--- http_config eval: $::HttpConfig
--- config
location = /v1/models { helix_endpoint models; }
--- user_files
>>> helix.yaml
cache:
  enabled: true
  l1:
    enabled: true
    max_size: 10000        # entries
    ttl: 5m
    eviction: lru
  l2:
    enabled: true
    host: redis:6379
    password: ${HELIX_TEST_UNSET:-}
    db: 0
    pool_size: 20
    max_retries: 3
  policies:
    completions:
      ttl: 30m
      max_size: 5000
    embeddings:
      ttl: 24h
      max_size: 50000
    debates:
      ttl: 1h
      max_size: 1000
  warming:
    enabled: true
    on_startup: true
    queries:
      - prompt: "Hello, how can I help?"
        providers: ["claude", "gemini"]
      - prompt: "What is HelixAgent?"
        providers: ["claude"]
database:
  host: localhost
  port: $TEST_NGINX_PG_PORT
  name: helixagent
  pool:
    max_open: 50
    max_idle: 10
    max_lifetime: 1h
    max_idle_time: 15m
    health_check: 30s
  query:
    slow_query_log: true
    slow_query_threshold: 100ms
    statement_cache: 1000
    prepared_statements: true
redis:
  host: localhost
  port: $TEST_NGINX_REDIS_PORT
  pool:
    size: 100
    min_idle: 10
    max_retries: 3
    timeout: 5s
    idle_timeout: 5m
http_client:
  pool:
    max_connections: 100
    max_idle_connections: 20
    idle_timeout: 90s
    timeout: 30s
    keep_alive: true
providers:
  parallel:
    enabled: true
    max_concurrent: 10
    per_provider: 3
  claude:
    max_concurrent: 5
    timeout: 60s
    models: [claude-3-5-sonnet-20241022]
  gemini:
    max_concurrent: 5
    timeout: 45s
    models: [gemini-1.5-pro]
    embedding_models: [text-embedding-004]
  local:
    type: openai
    location: /_helix/local
    models: [gpt-4o]
ensemble:
  parallel_execution: true
  max_providers: 3
  timeout: 30s
  fail_fast: false
streaming:
  enabled: true
  buffer_size: 4096        # Bytes
  flush_interval: 100ms
  compression: gzip
resources:
  memory:
    max_heap: 4G
    gc_percent: 100
    soft_limit: 3G
  cpu:
    gomaxprocs: 0
    worker_threads: 50
  requests:
    max_request_body: 10MB
    max_response_body: 50MB
    max_prompt_tokens: 100000
timeouts:
  read: 30s
  write: 60s
  idle: 120s
  provider_default: 60s
  provider_streaming: 300s
  database: 10s
  cache: 5s
metrics:
  - helixagent_request_duration_seconds
  - go_goroutines
alerts:
  - name: high_latency
    condition: "p99_latency > 5s"
    action: notify
--- request
GET /v1/models
--- response_body_like: ^\{"object":"list","data":\[\{"id":"claude-3-5-sonnet-20241022","object":"model","created":\d+,"owned_by":"claude"\},\{"id":"gemini-1.5-pro","object":"model","created":\d+,"owned_by":"gemini"\},\{"id":"text-embedding-004","object":"model","created":\d+,"owned_by":"gemini"\},\{"id":"gpt-4o","object":"model","created":\d+,"owned_by":"local"\}\]\}$
--- response_headers
Content-Type: application/json
--- no_error_log
[error]



=== TEST 1b: keys that mean nothing in nginx get a notice naming the nginx way (nginx -t output)
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
resources:
  memory:
    max_heap: 4G
    gc_percent: 100
  cpu:
    gomaxprocs: 0
timeouts:
  read: 30s
metrics:
  - go_goroutines
stop_here: true
--- must_die
--- error_log
[notice]
helix.yaml:3: resources.memory.max_heap: accepted, but it has no meaning inside nginx
helix.yaml:4: resources.memory.gc_percent: accepted
helix.yaml:6: resources.cpu.gomaxprocs: accepted, but it has no meaning inside nginx; set worker_processes
helix.yaml:8: timeouts.read: accepted, but server timeouts are nginx's own: set client_header_timeout
"go_goroutines" is a Go runtime metric
helix.yaml:11: unknown key "stop_here"



=== TEST 2: ${VAR} and ${VAR:-default} come from the environment
--- http_config eval: $::HttpConfig
--- config
location = /v1/models { helix_endpoint models; }
--- user_files
>>> helix.yaml
providers:
  openai:
    models: ["${HELIX_TEST_MODEL}", "${HELIX_TEST_UNSET:-fallback-model}", "x-${HELIX_TEST_MODEL}-y"]
--- request
GET /v1/models
--- response_body_like: "id":"env-model-7".*"id":"fallback-model".*"id":"x-env-model-7-y"



=== TEST 3: an empty file gives the defaults
--- http_config eval: $::HttpConfig
--- config
location = /v1/models { helix_endpoint models; }
--- user_files
>>> helix.yaml
# nothing yet
--- request
GET /v1/models
--- response_body: {"object":"list","data":[]}



=== TEST 4: unknown key names file, line, key and the known keys
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
cache:
  l1:
    max_size: 10
    ttll: 5m
--- must_die
--- error_log
helix.yaml:4: cache.l1: unknown key "ttll" (known keys here: enabled, max_size, ttl, eviction)



=== TEST 5: wrong type: a list where a mapping belongs
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
cache:
  policies: [a, b]
--- must_die
--- error_log
helix.yaml:2: cache.policies: expected a mapping of policy names, got a list



=== TEST 6: wrong type: a mapping where a number belongs
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
redis:
  pool:
    size: {a: 1}
--- must_die
--- error_log
helix.yaml:3: redis.pool.size: expected a single value, got a mapping



=== TEST 7: negative size
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
resources:
  requests:
    max_request_body: -10MB
--- must_die
--- error_log
helix.yaml:3: resources.requests.max_request_body: must not be negative, got "-10MB"



=== TEST 8: bad size unit
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
streaming:
  buffer_size: 4 parsecs
--- must_die
--- error_log
helix.yaml:2: streaming.buffer_size: invalid size "4 parsecs"



=== TEST 9: a duration without a unit
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
cache:
  l1:
    ttl: 300
--- must_die
--- error_log
helix.yaml:3: cache.l1.ttl: invalid duration "300" (write a number with a unit: ms, s, m, h or d



=== TEST 10: unset ${VAR}
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
admin:
  token: ${HELIX_TEST_UNSET}
--- must_die
--- error_log
helix.yaml:2: admin.token: environment variable "HELIX_TEST_UNSET" is not set (export it before starting nginx, or write ${HELIX_TEST_UNSET:-default})



=== TEST 11: YAML syntax error
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
cache:
  l1: [unclosed
--- must_die
--- error_log eval
qr/helix\.yaml:\d+:\d+: YAML syntax error: /



=== TEST 12: duplicate key
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
streaming:
  enabled: true
  enabled: false
--- must_die
--- error_log
helix.yaml:3: streaming: duplicate key "enabled" (first at line 2)



=== TEST 13: not a boolean
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
ensemble:
  fail_fast: maybe
--- must_die
--- error_log
helix.yaml:2: ensemble.fail_fast: expected true or false, got "maybe"



=== TEST 14: a provider with no type and a name that says none
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
providers:
  parallel:
    enabled: true
  mybox:
    models: [m1]
--- must_die
--- error_log
helix.yaml:4: providers.mybox: provider has no "type" (add type: openai, anthropic or gemini)



=== TEST 15: an unknown provider type lists the known ones
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
providers:
  p1:
    type: openia
    models: [m1]
--- must_die
--- error_log
helix.yaml:3: providers.p1.type: unknown value "openia" (expected one of: openai, anthropic, gemini)



=== TEST 16: a provider without models
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
providers:
  openai:
    api_key: x
--- must_die
--- error_log
helix.yaml:2: providers.openai: provider lists no models



=== TEST 17: warming names a provider that does not exist
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
providers:
  claude:
    models: [c1]
cache:
  warming:
    queries:
      - prompt: hi
        providers: [claude, nobody]
--- must_die
--- error_log
helix.yaml:7: cache.warming.queries[0]: unknown provider "nobody" (not in providers:)



=== TEST 18: a missing file
--- config
--- http_config
    helix_config ../html/nonexistent.yaml;
--- must_die
--- error_log
helix_config: cannot open



=== TEST 19: helix_config twice
--- config
--- http_config
    helix_config ../html/helix.yaml;
    helix_config ../html/helix.yaml;
--- user_files
>>> helix.yaml
cache:
  enabled: true
--- must_die
--- error_log
"helix_config" directive is duplicate



=== TEST 20: an unknown endpoint name
--- config
location /x { helix_endpoint chat; }
--- must_die
--- error_log
unknown helix endpoint "chat" (expected one of: chat_completions, completions,



=== TEST 21: the same key given twice as an API key
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
auth:
  enabled: true
  keys:
    - name: a
      key: k1-0123456789abcdef0123456789abcdef
    - name: b
      key: k1-0123456789abcdef0123456789abcdef
--- must_die
--- error_log
helix.yaml:6: auth.keys[1]: key of "b" is the same as the key of "a"



=== TEST 22: reload picks up a changed file
--- http_config eval: $::HttpConfig
--- config
location = /v1/models { helix_endpoint models; }
--- user_files
>>> helix.yaml
providers:
  openai:
    models: [before-reload]
--- reload_user_files
>>> helix.yaml
providers:
  openai:
    models: [after-reload]
--- request eval
["GET /v1/models", "GET /v1/models"]
--- response_body_like eval
['"id":"before-reload"', '"id":"after-reload"']



=== TEST 23: a broken file on reload keeps the running configuration
--- http_config eval: $::HttpConfig
--- config
location = /v1/models { helix_endpoint models; }
--- user_files
>>> helix.yaml
providers:
  openai:
    models: [still-running]
--- reload_user_files
>>> helix.yaml
providers:
  openai:
    models: [never-loaded]
    timeout: soon
--- request eval
["GET /v1/models", "GET /v1/models"]
--- response_body_like eval
['"id":"still-running"', '"id":"still-running"']
--- error_log
providers.openai.timeout: invalid duration "soon"
