# Bad input: each case gets an OpenAI error object with the right status,
# naming the field, and no provider is called.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config();
our $Yaml = ">>> helix.yaml\n$Helix::Providers" . <<'_EOC_';
resources:
  requests:
    max_request_body: 2KB
    max_prompt_tokens: 100
_EOC_

sub err {
    my ($msg, $type, $param, $code) = @_;
    $param = defined $param ? qq("$param") : 'null';
    return qq({"error":{"message":"$msg","type":"$type","param":$param,"code":"$code"}});
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: invalid JSON
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
POST /v1/chat/completions
{"model": "gpt-4o", "messages": [
--- error_code: 400
--- response_body_like: ^\{"error":\{"message":"request body is not valid JSON: [^"]+ \(line \d+, column \d+\)","type":"invalid_request_error","param":null,"code":"invalid_json"\}\}$
--- no_error_log
[error]



=== TEST 2: a body that is not an object
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
POST /v1/chat/completions
["model", "gpt-4o"]
--- error_code: 400
--- response_body eval: main::err("request body must be a JSON object", "invalid_request_error", undef, "invalid_json")



=== TEST 3: an empty body
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
POST /v1/chat/completions
--- error_code: 400
--- response_body eval: main::err("request body is empty", "invalid_request_error", undef, "invalid_json")



=== TEST 4: missing model
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
POST /v1/chat/completions
{"messages": [{"role": "user", "content": "hi"}]}
--- error_code: 400
--- response_body eval: main::err('\"model\" is required', "invalid_request_error", "model", "missing_field")



=== TEST 5: model of the wrong type
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
POST /v1/chat/completions
{"model": 4, "messages": [{"role": "user", "content": "hi"}]}
--- error_code: 400
--- response_body eval: main::err('\"model\" must be a string', "invalid_request_error", "model", "invalid_type")



=== TEST 6: missing and empty messages
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
['POST /v1/chat/completions
{"model": "gpt-4o"}', 'POST /v1/chat/completions
{"model": "gpt-4o", "messages": []}']
--- error_code eval: [400, 400]
--- response_body eval
[main::err('\"messages\" must be a non-empty array', "invalid_request_error", "messages", "missing_field"),
 main::err('\"messages\" must be a non-empty array', "invalid_request_error", "messages", "invalid_type")]



=== TEST 7: a bad role names the message
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
POST /v1/chat/completions
{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}]}
--- error_code: 400
--- response_body eval: main::err('each message needs a \"role\": system, developer, user, assistant or tool', "invalid_request_error", "messages[1].role", "invalid_value")



=== TEST 8: content of the wrong type names the message
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
POST /v1/chat/completions
{"model": "gpt-4o", "messages": [{"role": "user", "content": 42}]}
--- error_code: 400
--- response_body eval: main::err('\"content\" must be a string or an array of content parts', "invalid_request_error", "messages[0].content", "invalid_type")



=== TEST 9: numbers out of range or of the wrong type
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { "POST /v1/chat/completions\n" . qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], $_}) }
 '"temperature": 3', '"temperature": "hot"', '"top_p": -0.1', '"max_tokens": 0', '"max_tokens": 1.5', '"n": 1000', '"stop": [1]', '"stop": ["a","b","c","d","e"]', '"stream": "yes"', '"tools": {}']
--- error_code eval: [(400) x 10]
--- response_body eval
[main::err('\"temperature\" must be between 0.0 and 2.0', "invalid_request_error", "temperature", "invalid_value"),
 main::err('\"temperature\" must be a number', "invalid_request_error", "temperature", "invalid_type"),
 main::err('\"top_p\" must be between 0.0 and 1.0', "invalid_request_error", "top_p", "invalid_value"),
 main::err('\"max_tokens\" must be an integer from 1 to 2147483647', "invalid_request_error", "max_tokens", "invalid_value"),
 main::err('\"max_tokens\" must be an integer from 1 to 2147483647', "invalid_request_error", "max_tokens", "invalid_value"),
 main::err('\"n\" must be an integer from 1 to 128', "invalid_request_error", "n", "invalid_value"),
 main::err('\"stop\" must contain strings only', "invalid_request_error", "stop[0]", "invalid_type"),
 main::err('\"stop\" must be a string or an array of at most 4 strings', "invalid_request_error", "stop", "invalid_type"),
 main::err('\"stream\" must be a boolean', "invalid_request_error", "stream", "invalid_type"),
 main::err('\"tools\" must be an array', "invalid_request_error", "tools", "invalid_type")]



=== TEST 10: unknown model and unknown provider are 404
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
['POST /v1/chat/completions
{"model": "gpt-99", "messages": [{"role": "user", "content": "hi"}]}',
'POST /v1/chat/completions
{"model": "gpt-4o", "provider": "nobody", "messages": [{"role": "user", "content": "hi"}]}',
'POST /v1/chat/completions
{"model": "gpt-4o", "provider": "claude", "messages": [{"role": "user", "content": "hi"}]}',
'POST /v1/embeddings
{"model": "gpt-4o", "input": "hi"}']
--- error_code eval: [404, 404, 404, 404]
--- response_body eval
[main::err('model \"gpt-99\" is not served by any configured provider (see GET /v1/models)', "not_found_error", "model", "model_not_found"),
 main::err('provider \"nobody\" is not configured', "not_found_error", "provider", "provider_not_found"),
 main::err('model \"gpt-4o\" is not served by provider \"claude\"', "not_found_error", "model", "model_not_found"),
 main::err('model \"gpt-4o\" is not served by any configured provider (see GET /v1/models)', "not_found_error", "model", "model_not_found")]



=== TEST 11: a body over max_request_body is 413 before it is read
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
"POST /v1/chat/completions\n" . ('x' x 3000)
--- error_code: 413
--- response_body eval: main::err("request body of 3000 bytes is larger than max_request_body (2048 bytes)", "invalid_request_error", undef, "request_too_large")



=== TEST 12: a chunked body over max_request_body is 413 too
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- raw_request eval
"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n" . sprintf("%x\r\n%s\r\n0\r\n\r\n", 2500, 'y' x 2500)
--- error_code: 413
--- response_body eval: main::err("request body of 2500 bytes is larger than max_request_body (2048 bytes)", "invalid_request_error", undef, "request_too_large")



=== TEST 13: a prompt over max_prompt_tokens is 422
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
"POST /v1/chat/completions\n" . qq({"model": "gpt-4o", "messages": [{"role": "user", "content": ") . ('word ' x 100) . qq("}]})
--- error_code: 422
--- response_body eval: main::err("the prompt is about 125 tokens, more than max_prompt_tokens (100)", "invalid_request_error", undef, "context_length_exceeded")



=== TEST 14: completions: prompt missing or empty
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
['POST /v1/completions
{"model": "gpt-4o"}', 'POST /v1/completions
{"prompt": ""}']
--- error_code eval: [400, 400]
--- response_body eval
[main::err('\"prompt\" must be a non-empty string', "invalid_request_error", "prompt", "missing_field"),
 main::err('\"prompt\" must be a non-empty string', "invalid_request_error", "prompt", "invalid_type")]



=== TEST 15: embeddings: bad input
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
['POST /v1/embeddings
{"model": "text-embedding-3-small"}', 'POST /v1/embeddings
{"model": "text-embedding-3-small", "input": [[1, 2, 3]]}', 'POST /v1/embeddings
{"model": "text-embedding-3-small", "input": ["ok", ""]}', 'POST /v1/embeddings
{"model": "text-embedding-3-small", "input": "x", "encoding_format": "hex"}', 'POST /v1/embeddings
{"input": "x"}']
--- error_code eval: [400, 400, 400, 400, 400]
--- response_body eval
[main::err('\"input\" must be a string or an array of 1 to 2048 strings', "invalid_request_error", "input", "missing_field"),
 main::err('each input must be a non-empty string (token arrays are not supported)', "invalid_request_error", "input[0]", "invalid_type"),
 main::err('each input must be a non-empty string (token arrays are not supported)', "invalid_request_error", "input[1]", "invalid_type"),
 main::err('\"encoding_format\" must be \"float\" or \"base64\"', "invalid_request_error", "encoding_format", "invalid_value"),
 main::err('\"model\" is required', "invalid_request_error", "model", "missing_field")]



=== TEST 16: GET on a POST endpoint is 405
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
GET /v1/chat/completions
--- error_code: 405
--- response_headers
Allow: POST



=== TEST 17: none of the bad requests reached a provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/openai/reset",
 'POST /v1/chat/completions
{"model": "gpt-4o", "messages": [{"role": "nobody"}]}',
 'POST /v1/chat/completions
not json at all',
 "GET /mock/openai/stats"]
--- error_code eval: [200, 400, 400, 200]
--- response_body_like eval
['ok', 'invalid_value', 'invalid_json', '"requests":\{\},"total":0']



=== TEST 18: hostile JSON: deep nesting, huge numbers, NUL escapes
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /v1/chat/completions\n" . ('[' x 1000) . (']' x 1000),
 'POST /v1/chat/completions
{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 99999999999999999999999}',
 'POST /v1/chat/completions
{"model": "gpt-4o\u0000x", "messages": [{"role": "user", "content": "hi"}]}']
--- error_code eval: [400, 400, 400]
--- no_error_log
[alert]



=== TEST 19: not JSON: bad UTF-8, a lone surrogate, trailing bytes, a control character
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /v1/chat/completions\n{\"model\": \"gpt-4o\", \"messages\": [{\"role\": \"user\", \"content\": \"caf\xc3\"}]}",
 "POST /v1/chat/completions\n{\"model\": \"gpt-4o\", \"messages\": [{\"role\": \"user\", \"content\": \"\\udc00\"}]}",
 "POST /v1/chat/completions\n{\"model\": \"gpt-4o\", \"messages\": []} x",
 "POST /v1/chat/completions\n{\"model\": \"gpt\t4o\", \"messages\": []}"]
--- error_code eval: [400, 400, 400, 400]
--- response_body_like eval
['"message":"request body is not valid JSON: invalid UTF-8 in string \(line 1, column 66\)"',
 '"message":"request body is not valid JSON: invalid Unicode \(lone low surrogate\) \(line 1, column 63\)"',
 '"message":"request body is not valid JSON: end of input expected \(line 1, column 37\)"',
 '"message":"request body is not valid JSON: control character in string \(line 1, column 15\)"']
--- no_error_log
[alert]



=== TEST 20: duplicate keys are refused, escaped or nested, and reach no provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/openai/reset",
 'POST /v1/chat/completions
{"model": "gpt-4o", "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}',
 'POST /v1/chat/completions
{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "m\u006fdel": "x"}',
 'POST /v1/chat/completions
{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi", "role": "system"}]}',
 'POST /v1/chat/completions
{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "model\u0000x": "y"}',
 "GET /mock/openai/stats"]
--- error_code eval: [200, 400, 400, 400, 400, 200]
--- response_body_like eval
['ok',
 '"message":"request body is not valid JSON: duplicate object key \(line 1, column 21\)"',
 '"message":"request body is not valid JSON: duplicate object key \(line 1, column 70\)"',
 '"message":"request body is not valid JSON: duplicate object key \(line 1, column 68\)"',
 '"message":"request body is not valid JSON: \\\\\\\\u0000 is not allowed \(line 1, column 76\)',
 '"requests":\{\},"total":0']
--- no_error_log
[alert]



=== TEST 21: the same key in different objects is fine
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
POST /v1/chat/completions
{"model": "gpt-4o", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
--- error_code: 200
--- response_body_like: "object":"chat.completion"
--- no_error_log
[error]
