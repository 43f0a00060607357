# GET /health, methods, and the endpoints that are not there yet.
use Test::Nginx::Socket 'no_plan';

our $HttpConfig = <<'_EOC_';
    helix_config ../html/helix.yaml;
_EOC_

our $Yaml = <<'_EOC_';
>>> helix.yaml
providers:
  openai:
    models: [gpt-4o]
  claude:
    models: [claude-3-haiku-20240307]
_EOC_

no_shuffle();
run_tests();

__DATA__

=== TEST 1: /health answers JSON with the version and provider count
--- http_config eval: $::HttpConfig
--- user_files eval: $::Yaml
--- config
location = /health { helix_endpoint health; }
--- request
GET /health
--- response_body_like: ^\{"status":"ok","version":"\d+\.\d+\.\d+","pid":\d+,"providers":2,"config_loaded":\d+,"uptime_seconds":\d+,"cache":\{"l1":true,"entries":0,"bytes":0,"hits":0,"misses":0,"evictions":0\}\}$
--- response_headers
Content-Type: application/json
--- no_error_log
[error]



=== TEST 2: /health works without helix_config
--- config
location = /health { helix_endpoint health; }
--- request
GET /health
--- response_body_like: "providers":0



=== TEST 3: HEAD /health sends headers only
--- http_config eval: $::HttpConfig
--- user_files eval: $::Yaml
--- config
location = /health { helix_endpoint health; }
--- request
HEAD /health
--- response_body:
--- error_code: 200



=== TEST 4: a wrong method is 405 with Allow and an OpenAI error object
--- http_config eval: $::HttpConfig
--- user_files eval: $::Yaml
--- config
location = /v1/models { helix_endpoint models; }
--- request
DELETE /v1/models
--- error_code: 405
--- response_headers
Allow: GET, HEAD
Content-Type: application/json
--- response_body: {"error":{"message":"DELETE is not allowed on /v1/models","type":"invalid_request_error","param":null,"code":"method_not_allowed"}}



=== TEST 5: POST with a body on a GET endpoint is 405, body discarded
--- http_config eval: $::HttpConfig
--- user_files eval: $::Yaml
--- config
location = /health { helix_endpoint health; }
--- request
POST /health
{"a": 1}
--- error_code: 405
--- response_headers
Allow: GET, HEAD



=== TEST 6: every endpoint is implemented: /v1/tasks without an id is a JSON 404
--- http_config eval: $::HttpConfig
--- user_files eval: $::Yaml
--- config
location /v1/tasks { helix_endpoint tasks; }
--- request
GET /v1/tasks
--- error_code: 404
--- response_body: {"error":{"message":"no task id in \"/v1/tasks\" (GET or DELETE /v1/tasks/{id})","type":"not_found_error","param":null,"code":"task_not_found"}}



=== TEST 7: a location without helix_endpoint is not ours
--- http_config eval: $::HttpConfig
--- user_files eval: $::Yaml
--- config
location = /v1/models { helix_endpoint models; }
location /other { return 200 "plain\n"; }
--- request
GET /other
--- response_body
plain
