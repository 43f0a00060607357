# GET /v1/models: OpenAI's list schema, from the configured providers.
use Test::Nginx::Socket 'no_plan';

our $HttpConfig = <<'_EOC_';
    helix_config ../html/helix.yaml;
_EOC_

no_shuffle();
run_tests();

__DATA__

=== TEST 1: chat and embedding models, owned_by the provider's name, in config order
--- http_config eval: $::HttpConfig
--- config
location = /v1/models { helix_endpoint models; }
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    models: [gpt-4o, gpt-4o-mini]
    embedding_models: [text-embedding-3-small]
  claude:
    type: anthropic
    models: [claude-3-5-sonnet-20241022]
  gemini:
    type: gemini
    models: [gemini-1.5-flash]
--- request
GET /v1/models
--- response_body_like: ^\{"object":"list","data":\[\{"id":"gpt-4o","object":"model","created":\d+,"owned_by":"openai"\},\{"id":"gpt-4o-mini","object":"model","created":\d+,"owned_by":"openai"\},\{"id":"text-embedding-3-small","object":"model","created":\d+,"owned_by":"openai"\},\{"id":"claude-3-5-sonnet-20241022","object":"model","created":\d+,"owned_by":"claude"\},\{"id":"gemini-1.5-flash","object":"model","created":\d+,"owned_by":"gemini"\}\]\}$



=== TEST 2: a disabled provider's models are not listed
--- http_config eval: $::HttpConfig
--- config
location = /v1/models { helix_endpoint models; }
--- user_files
>>> helix.yaml
providers:
  openai:
    models: [gpt-4o]
  gemini:
    enabled: false
    models: [gemini-1.5-flash]
--- request
GET /v1/models
--- response_body_like: ^\{"object":"list","data":\[\{"id":"gpt-4o","object":"model","created":\d+,"owned_by":"openai"\}\]\}$



=== TEST 3: a model served by two providers is listed once per provider
--- http_config eval: $::HttpConfig
--- config
location = /v1/models { helix_endpoint models; }
--- user_files
>>> helix.yaml
providers:
  openai:
    models: [shared-model]
  backup:
    type: openai
    models: [shared-model]
--- request
GET /v1/models
--- response_body_like: "id":"shared-model","object":"model","created":\d+,"owned_by":"openai"\},\{"id":"shared-model","object":"model","created":\d+,"owned_by":"backup"
