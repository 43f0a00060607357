# The core path: each provider type, request and answer translated field
# by field, for chat completions, the guide's completions and embeddings.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config();
our $Yaml = ">>> helix.yaml\n$Helix::Providers";

no_shuffle();
run_tests();

__DATA__

=== TEST 1: OpenAI chat: the provider's answer comes back as is, the request reaches it with the key
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/openai/reset",
 'POST /v1/chat/completions
{"model": "gpt-4o", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello there"}], "temperature": 0.5, "max_tokens": 40, "user": "u1", "provider_extra": 1}',
 "GET /mock/openai/stats"]
--- response_body_like eval
['"status":"ok"',
 '^\{"id":"chatcmpl-[0-9a-f]+","object":"chat.completion","created":\d+,"model":"gpt-4o","choices":\[\{"index":0,"message":\{"role":"assistant","content":"Mock answer [0-9a-f]{8} to: Hello there [a-z ]+","refusal":null\},"logprobs":null,"finish_reason":"(stop|length)"\}\],"usage":\{"prompt_tokens":\d+,"completion_tokens":\d+,"total_tokens":\d+\},"system_fingerprint":"fp_mock"\}$',
 '"requests":\{"POST /v1/chat/completions":1\}.*"last_request":\{"method":"POST","path":"/v1/chat/completions","query":"","headers":\{[^}]*"authorization":"Bearer sk-openai-test"[^}]*\},"body":\{"model":"gpt-4o","messages":\[\{"role":"system","content":"be brief"\},\{"role":"user","content":"Hello there"\}\],"temperature":0.5,"max_tokens":40,"user":"u1","provider_extra":1\}']
--- response_headers eval
["", "X-Helix-Provider: openai\nContent-Type: application/json", ""]
--- no_error_log
[error]



=== TEST 2: Anthropic: system hoisted, max_tokens filled, x-api-key and anthropic-version, answer mapped to OpenAI
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/claude/reset",
 'POST /v1/chat/completions
{"model": "claude-3-haiku-20240307", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello there"}], "temperature": 0.5, "stop": ["never"]}',
 "GET /mock/claude/stats"]
--- response_body_like eval
['"status":"ok"',
 '^\{"id":"chatcmpl-msg_[0-9a-f]+","object":"chat.completion","created":\d+,"model":"claude-3-haiku-20240307","choices":\[\{"index":0,"message":\{"role":"assistant","content":"Mock answer 72ae1a2c to: Hello there [a-z ]+","refusal":null\},"logprobs":null,"finish_reason":"stop"\}\],"usage":\{"prompt_tokens":8,"completion_tokens":30,"total_tokens":38\}\}$',
 '"last_request":\{"method":"POST","path":"/v1/messages","query":"","headers":\{[^}]*"x-api-key":"sk-ant-test","anthropic-version":"2023-06-01"[^}]*\},"body":\{"model":"claude-3-haiku-20240307","system":"be brief","messages":\[\{"role":"user","content":"Hello there"\}\],"max_tokens":4096,"temperature":0.5,"stop_sequences":\["never"\]\}']
--- response_headers eval
["", "X-Helix-Provider: claude", ""]
--- no_error_log
[error]



=== TEST 3: Gemini: contents, systemInstruction, generationConfig, x-goog-api-key; usageMetadata mapped
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/gemini/reset",
 'POST /v1/chat/completions
{"model": "gemini-1.5-flash", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi"}, {"role": "user", "content": [{"type": "text", "text": "More please"}]}], "temperature": 0.25, "top_p": 0.5, "max_tokens": 5}',
 "GET /mock/gemini/stats"]
--- response_body_like eval
['"status":"ok"',
 '^\{"id":"chatcmpl-[0-9a-f]+","object":"chat.completion","created":\d+,"model":"gemini-1.5-flash","choices":\[\{"index":0,"message":\{"role":"assistant","content":"Mock answer [0-9a-f]{8} to: More","refusal":null\},"logprobs":null,"finish_reason":"length"\}\],"usage":\{"prompt_tokens":\d+,"completion_tokens":5,"total_tokens":\d+\}\}$',
 '"last_request":\{"method":"POST","path":"/v1beta/models/gemini-1.5-flash:generateContent","query":"","headers":\{[^}]*"x-goog-api-key":"gem-test"[^}]*\},"body":\{"contents":\[\{"role":"user","parts":\[\{"text":"Hello there"\}\]\},\{"role":"model","parts":\[\{"text":"Hi"\}\]\},\{"role":"user","parts":\[\{"text":"More please"\}\]\}\],"systemInstruction":\{"parts":\[\{"text":"be brief"\}\]\},"generationConfig":\{"temperature":0.25,"topP":0.5,"maxOutputTokens":5\}\}']
--- no_error_log
[error]



=== TEST 4: the same conversation gives the same text from every provider type
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { "POST /v1/chat/completions\n" . qq({"model": "mock-shared", "provider": "$_", "messages": [{"role": "user", "content": "same words"}]}) } qw(openai claude gemini)]
--- response_body_like eval
[('"content":"Mock answer 889d1873 to: same words nostrud exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate velit esse cillum eu fugiat nulla pariatur excepteur"') x 3]
--- response_headers eval
["X-Helix-Provider: openai", "X-Helix-Provider: claude", "X-Helix-Provider: gemini"]



=== TEST 5: tools and tool_choice pass through; tool calls come back in OpenAI's shape from every type
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { "POST /v1/chat/completions\n" . qq({"model": "mock-shared", "provider": "$_", "messages": [{"role": "user", "content": "what is the weather in Paris?"}], "tools": [{"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}], "tool_choice": "auto"}) } qw(openai claude gemini)]
--- response_body_like eval
[('"content":null,"refusal":null,"tool_calls":\[\{"id":"[^"]+","type":"function","function":\{"name":"get_weather","arguments":"\{\\\\"location\\\\":\s?\\\\"Paris\\\\"\}"\}\}\]\},"logprobs":null,"finish_reason":"tool_calls"\}\]') x 3]



=== TEST 6: the guide's /v1/completions answers an OpenAI text_completion
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
POST /v1/completions
{"prompt": "Translate to French: Hello", "model": "claude-3-haiku-20240307", "max_tokens": 8}
--- response_body_like: ^\{"id":"cmpl-msg_[0-9a-f]+","object":"text_completion","created":\d+,"model":"claude-3-haiku-20240307","choices":\[\{"text":"Mock answer [0-9a-f]{8} to: Translate to French: Hello","index":0,"logprobs":null,"finish_reason":"length"\}\],"usage":\{"prompt_tokens":\d+,"completion_tokens":8,"total_tokens":\d+\}\}$
--- response_headers
X-Helix-Provider: claude



=== TEST 7: /v1/completions without a model uses the first provider's default model
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
POST /v1/completions
{"prompt": "Hello"}
--- response_body_like: "object":"text_completion".*"model":"gpt-4o"
--- response_headers
X-Helix-Provider: openai



=== TEST 8: /v1/completions with only a provider uses that provider's default model
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
POST /v1/completions
{"prompt": "Hello", "provider": "gemini"}
--- response_body_like: "model":"gemini-1.5-flash"
--- response_headers
X-Helix-Provider: gemini



=== TEST 9: embeddings from OpenAI, string input: the client's bytes go to an OpenAI-format provider as they are
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/openai/reset",
 'POST /v1/embeddings
{"model": "text-embedding-3-small", "input": "hello world", "dimensions": 4}',
 "GET /mock/openai/stats"]
--- response_body_like eval
['"status":"ok"',
 '^\{"object":"list","data":\[\{"object":"embedding","index":0,"embedding":\[-?[0-9.e-]+,-?[0-9.e-]+,-?[0-9.e-]+,-?[0-9.e-]+\]\}\],"model":"text-embedding-3-small","usage":\{"prompt_tokens":\d+,"total_tokens":\d+\}\}$',
 '"body":\{"model":"text-embedding-3-small","input":"hello world","dimensions":4\}']



=== TEST 10: embeddings from Gemini: batchEmbedContents, vectors in input order, usage estimated
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/gemini/reset",
 'POST /v1/embeddings
{"model": "text-embedding-004", "input": ["first text", "second text", "third"], "dimensions": 3}',
 "GET /mock/gemini/stats"]
--- response_body_like eval
['"status":"ok"',
 '^\{"object":"list","data":\[\{"object":"embedding","index":0,"embedding":\[[^\]]+\]\},\{"object":"embedding","index":1,"embedding":\[[^\]]+\]\},\{"object":"embedding","index":2,"embedding":\[[^\]]+\]\}\],"model":"text-embedding-004","usage":\{"prompt_tokens":7,"total_tokens":7\}\}$',
 '"path":"/v1beta/models/text-embedding-004:batchEmbedContents".*"body":\{"requests":\[\{"content":\{"parts":\[\{"text":"first text"\}\]\},"model":"models/text-embedding-004","outputDimensionality":3\},\{"content":\{"parts":\[\{"text":"second text"\}\]\}']



=== TEST 11: the same text embeds to the same vector through the gateway and directly
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
['POST /v1/embeddings
{"model": "mock-embed", "provider": "openai", "input": ["abc"], "dimensions": 2}',
 'POST /v1/embeddings
{"model": "mock-embed", "provider": "openai", "input": ["abc"], "dimensions": 2}']
--- response_body_like eval
['"embedding":\[(-?[0-9.e-]+),(-?[0-9.e-]+)\]', '"embedding":\[(-?[0-9.e-]+),(-?[0-9.e-]+)\]']



=== TEST 12: /v1/models lists the providers' models for the SDKs
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
GET /v1/models
--- response_body_like: "id":"gpt-4o","object":"model","created":\d+,"owned_by":"openai".*"id":"claude-3-haiku-20240307","object":"model","created":\d+,"owned_by":"claude".*"id":"text-embedding-004","object":"model","created":\d+,"owned_by":"gemini"



=== TEST 13: embeddings as base64 (the OpenAI SDKs' default) from a provider that only gives floats
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
['POST /v1/embeddings
{"model": "text-embedding-004", "input": ["abc", "de"], "dimensions": 2, "encoding_format": "base64"}',
 "GET /mock/gemini/stats"]
--- response_body_like eval
['^(?!.*encoding_format)\{"object":"list","data":\[\{"object":"embedding","index":0,"embedding":"[A-Za-z0-9+/]{11}="\},\{"object":"embedding","index":1,"embedding":"[A-Za-z0-9+/]{11}="\}\],"model":"text-embedding-004","usage":',
 '^(?!.*encoding_format).*"outputDimensionality":2\}\]\}']
