# Every kind of answer, from every provider type, valid against OpenAI's
# published OpenAPI schemas (util/schema-check.py; the description is
# reference data outside the project, $HELIX_OPENAPI): chat with text and
# with tool calls, every chunk of chat streams (live and replayed from the
# cache), completions, embeddings (float and base64), models and the
# error answers.  A failing block shows the validator's message.
BEGIN {
    require HelixSchema;
    if (my $why = HelixSchema::missing()) {
        require Test::More;
        Test::More::plan(skip_all => $why);
    }
}
use Test::Nginx::Socket 'no_plan';
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(cache => 0);
our $Yaml = ">>> helix.yaml\n$Helix::Providers";
our @P = qw(openai claude gemini);

sub fault { my ($p, $json) = @_; return "POST /mock/$p/faults\n$json"; }

sub chat {
    my ($p, $extra, $messages) = @_;
    $extra //= '';
    $messages //= '[{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello schema"}]';
    return qq{POST /v1/chat/completions
{"model": "mock-shared", "provider": "$p"$extra, "messages": $messages}};
}

our $Tools = ', "tools": [{"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]';
our $Weather = '[{"role": "user", "content": "what is the weather in Paris?"}]';
# a tool's result back, and the answer to it
our $Result = '[{"role": "user", "content": "what is the weather in Paris?"}, {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}}]}, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]';

# requests with the schema each answer must fit: [request, schema, %opts]
our @Chat = map {
    my $p = $_;
    ([chat($p)],
     [chat($p, ', "max_tokens": 3')],
     [chat($p, ', "stop": ["answer"]')],
     [chat($p, $Tools, $Weather)],
     [chat($p, $Tools . ', "tool_choice": "required"', '[{"role": "user", "content": "hi"}]')],
     [chat($p, $Tools, $Result)],
     [chat($p, ', "n": 2')])
} @P;

our @Stream = map {
    my $p = $_;
    ([chat($p, ', "stream": true')],
     [chat($p, ', "stream": true, "max_tokens": 3, "stream_options": {"include_usage": true}')],
     [chat($p, ', "stream": true, "stream_options": {"include_usage": true}' . $Tools, $Weather)],
     [chat($p, ', "stream": true, "stop": ["answer"]')],
     [chat($p, ', "stream": true, "n": 2, "stream_options": {"include_usage": true}')])
} @P;

# what the blocks read: the requests, one filter per request, "valid" each
sub requests { return [map { $_->[0] } @_]; }
sub filters {
    my ($schema, %o) = @_;
    return sub { Helix::per_request([map { HelixSchema::as($schema, %o) } @_]) };
}
sub valid { return [("valid") x scalar @_]; }

no_shuffle();
run_tests();

__DATA__

=== TEST 1: chat: text, length, stop sequence, tool calls, forced tool, a tool's result answered, two choices, from every provider type
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval: main::requests(@::Chat)
--- error_code eval: [(200) x @::Chat]
--- response_body_filters eval: main::filters('CreateChatCompletionResponse')->(@::Chat)
--- response_body eval: main::valid(@::Chat)
--- no_error_log
[error]



=== TEST 2: chat streams, every chunk: text, usage chunk, tool call deltas, stop sequence, two choices, from every provider type
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval: main::requests(@::Stream)
--- error_code eval: [(200) x @::Stream]
--- response_body_filters eval: main::filters('CreateChatCompletionStreamResponse', sse => 1)->(@::Stream)
--- response_body eval: main::valid(@::Stream)
--- no_error_log
[error]



=== TEST 3: answers from the cache: chat, completions and embeddings again (hits), and streams replayed from a cached answer, with tools too
--- http_config eval: $::HttpConfig
--- config eval: Helix::config()
--- user_files eval: $::Yaml
--- request eval
[(map { my $p = $_; (main::chat($p, ', "max_tokens": 4'), main::chat($p, ', "max_tokens": 4'),
    main::chat($p, ', "max_tokens": 4, "stream": true'),
    main::chat($p, ', "max_tokens": 4, "stream": true, "stream_options": {"include_usage": true}'),
    main::chat($p, $::Tools, $::Weather), main::chat($p, $::Tools . ', "stream": true', $::Weather),
    (qq{POST /v1/completions\n{"model": "mock-shared", "provider": "$p", "prompt": "cached"}}) x 2) } @::P),
 (map { (qq{POST /v1/embeddings\n{"model": "mock-embed", "provider": "$_", "input": "cached"}}) x 2 } qw(openai gemini))]
--- error_code eval: [(200) x 28]
--- response_body_filters eval
Helix::per_request([(map { (HelixSchema::as('CreateChatCompletionResponse')) x 2,
    (HelixSchema::as('CreateChatCompletionStreamResponse', sse => 1)) x 2,
    HelixSchema::as('CreateChatCompletionResponse'),
    HelixSchema::as('CreateChatCompletionStreamResponse', sse => 1),
    (HelixSchema::as('CreateCompletionResponse')) x 2 } @::P),
    (HelixSchema::as('CreateEmbeddingResponse')) x 4])
--- response_body eval: [("valid") x 28]
--- no_error_log
[error]



=== TEST 4: completions from every provider type: text, length, stop sequence
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { my $p = $_; map { qq{POST /v1/completions\n{"model": "mock-shared", "provider": "$p"$_}} }
    (', "prompt": "Hello schema"', ', "prompt": "Hello schema", "max_tokens": 3',
     ', "prompt": "Hello schema", "stop": ["answer"]') } @::P]
--- error_code eval: [(200) x 9]
--- response_body_filters eval
Helix::per_request([(HelixSchema::as('CreateCompletionResponse')) x 9])
--- response_body eval: [("valid") x 9]
--- no_error_log
[error]



=== TEST 5: embeddings from the OpenAI and Gemini types: one input and several, floats, dimensions, and base64
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { my $p = $_; map { qq{POST /v1/embeddings\n{"model": "mock-embed", "provider": "$p"$_}} }
    (', "input": "hello"', ', "input": ["hello", "world"], "dimensions": 8',
     ', "input": ["hello", "world"], "encoding_format": "float"',
     ', "input": "hello", "encoding_format": "base64"',
     ', "input": ["hello", "world"], "dimensions": 8, "encoding_format": "base64"') } qw(openai gemini)]
--- error_code eval: [(200) x 10]
--- response_body_filters eval
Helix::per_request([map { ((HelixSchema::as('CreateEmbeddingResponse')) x 3,
    (HelixSchema::as('CreateEmbeddingResponse', base64 => 1)) x 2) } 1 .. 2])
--- response_body eval: [("valid") x 10]
--- no_error_log
[error]



=== TEST 6: models: the list, and each model in it
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
GET /v1/models
--- error_code: 200
--- response_body_filters eval
Helix::per_request([HelixSchema::as('ListModelsResponse')])
--- response_body: valid



=== TEST 7: errors: 400 (not JSON, no messages, a bad field), 404 (model, provider), 405, 413, 422, 502 (providers failing, before and during a stream)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml\n$Helix::Providers" . <<'_EOY_'
resources:
  requests:
    max_request_body: 2KB
    max_prompt_tokens: 100
_EOY_
--- request eval
["POST /v1/chat/completions\n{not json",
 qq{POST /v1/chat/completions\n{"model": "gpt-4o"}},
 qq{POST /v1/chat/completions\n{"model": "gpt-4o", "messages": "hello"}},
 qq{POST /v1/embeddings\n{"model": "mock-embed"}},
 qq{POST /v1/chat/completions\n{"model": "gpt-99", "messages": [{"role": "user", "content": "hi"}]}},
 main::chat("nobody"),
 "POST /v1/models\n{}",
 "POST /v1/chat/completions\n" . ('x' x 3000),
 main::chat("openai", '', '[{"role": "user", "content": "' . ('many words ' x 50) . '"}]'),
 "POST /mock/reset",
 main::fault(openai => '{"status": 500, "count": 1}'), main::fault(claude => '{"status": 429, "count": 1}'),
 main::fault(gemini => '{"status": 503, "count": 1}'),
 qq{POST /v1/chat/completions\n{"model": "mock-shared", "messages": [{"role": "user", "content": "hi"}]}},
 main::fault(openai => '{"stream_error": 3, "count": 1}'), main::chat("openai", ', "stream": true'),
 main::fault(claude => '{"stream_error": 4, "count": 1}'), main::chat("claude", ', "stream": true'),
 main::fault(gemini => '{"stream_error": 2, "count": 1}'), main::chat("gemini", ', "stream": true'),
 "POST /mock/reset"]
--- error_code eval
[400, 400, 400, 400, 404, 404, 405, 413, 422, 200, 200, 200, 200, 502, 200, 200, 200, 200, 200, 200, 200]
--- response_body_filters eval
my $e = HelixSchema::as('ErrorResponse');
my $s = HelixSchema::as('CreateChatCompletionStreamResponse', sse => 1);
Helix::per_request([($e) x 9, undef, undef, undef, undef, $e, undef, $s, undef, $s, undef, $s, undef])
--- response_body_like eval
[("^valid\$") x 9, "", "", "", "", "^valid\$", "", "^valid\$", "", "^valid\$", "", "^valid\$", ""]



=== TEST 8: 401: no key, an unknown key
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml\n$Helix::Providers" . <<'_EOY_'
auth:
  enabled: true
  keys:
    - name: team-a
      key: sk-team-a-0123456789abcdef0123456789abcdef
_EOY_
--- request eval
[main::chat("openai"), main::chat("openai")]
--- more_headers eval
["", "Authorization: Bearer sk-team-c"]
--- error_code eval: [401, 401]
--- response_body_filters eval
Helix::per_request([(HelixSchema::as('ErrorResponse')) x 2])
--- response_body eval: ["valid", "valid"]



=== TEST 9: 429: over the rate limit
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml\n$Helix::Providers" . <<'_EOY_'
rate_limit:
  requests_per_minute: 1
_EOY_
--- request eval
[main::chat("openai"), main::chat("openai")]
--- error_code eval: [200, 429]
--- response_body_filters eval
Helix::per_request([HelixSchema::as('CreateChatCompletionResponse'), HelixSchema::as('ErrorResponse')])
--- response_body eval: ["valid", "valid"]



=== TEST 10: 503: every circuit breaker open
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
["POST /mock/reset", main::fault(openai => '{"status": 503, "count": 1}'),
 main::chat("openai"), main::chat("openai"), main::chat("openai", ', "stream": true'), "POST /mock/reset"]
--- error_code eval: [200, 200, 502, 503, 503, 200]
--- response_body_filters eval
my $e = HelixSchema::as('ErrorResponse');
Helix::per_request([undef, undef, $e, $e, $e, undef])
--- response_body_like eval
["", "", "^valid\$", "^valid\$", "^valid\$", ""]
