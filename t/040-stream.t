# SSE streams: every client format from every provider type, translated
# event by event in the subrequest's body filter and flushed at once.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(cache => 0);
our $Streaming = "streaming:\n  flush_interval: 0\n";
our $Yaml = ">>> helix.yaml\n$Helix::Providers\n$Streaming";

sub fault { my ($p, $json) = @_; return "POST /mock/$p/faults\n$json"; }

sub chat {
    my ($model, $extra) = @_;
    $extra //= '';
    # an $extra max_tokens replaces the default: duplicate keys are a 400
    my $max = $extra =~ /"max_tokens"/ ? '' : ', "max_tokens": 3';
    return qq{POST /v1/chat/completions
{"model": "$model", "stream": true$max$extra, "messages": [{"role": "user", "content": "Hello"}]}};
}

sub completion {
    my ($model, $extra) = @_;
    $extra //= '';
    # an $extra max_tokens replaces the default: duplicate keys are a 400
    my $max = $extra =~ /"max_tokens"/ ? '' : ', "max_tokens": 3';
    return qq{POST /v1/completions
{"model": "$model", "stream": true$max$extra, "prompt": "Hello"}};
}

our $Usage = '\{"prompt_tokens":3,"completion_tokens":3,"total_tokens":6\}';
our $Chunk = '\{"id":"chatcmpl-(msg_)?[0-9a-f]+","object":"chat.completion.chunk","created":\d+,"model":"%s"(,"system_fingerprint":"fp_mock")?,"choices":\[\{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s\}\](,"usage":null)?\}';

# what a chat client gets from any provider, frame by frame
sub chat_list {
    my ($model, %o) = @_;
    my $n = $o{pieces} // 3;
    my @p = ('Mock', ' answer', ' [0-9a-f]{8}', ' to:', ' Hello');
    my @f = sprintf($Chunk, $model, '\{"role":"assistant","content":""(,"refusal":null)?\}', 'null');
    push @f, map { sprintf($Chunk, $model, "\\{\"content\":\"$_\"\\}", 'null') } @p[0 .. $n - 1];
    return @f if $o{cut};
    push @f, sprintf($Chunk, $model, '\{\}', '"' . ($o{finish} // 'length') . '"');
    push @f, '\{"id":"chatcmpl-(msg_)?[0-9a-f]+","object":"chat.completion.chunk","created":\d+,"model":"'
        . $model . '"(,"system_fingerprint":"fp_mock")?,"choices":\[\],"usage":' . $Usage . '\}'
        if $o{usage};
    push @f, '\[DONE\]';
    return @f;
}

sub frames { return '^' . join('', map { "data: $_\n\n" } @_) . '$'; }

sub chat_frames { return frames(chat_list(@_)); }

# the guide's frames, exactly
sub completion_frames {
    return frames('\{"content": "Mock", "done": false\}',
                  '\{"content": " answer", "done": false\}',
                  '\{"content": " [0-9a-f]{8}", "done": false\}',
                  '\{"done": true, "usage": \{"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6\}\}');
}

sub stream_error {
    my ($p, $msg) = @_;
    $msg //= 'mock_provider injected stream error';
    return '\{"error":\{"message":"provider \\\\"' . $p
        . '\\\\": ' . $msg . '","type":"api_error","param":null,"code":"provider_error"\}\}';
}

# a cached answer replayed: its whole text in one chunk
sub replay_frames {
    my ($model, %o) = @_;
    my @f = (sprintf($Chunk, $model, '\{"role":"assistant","content":""\}', 'null'),
             sprintf($Chunk, $model, '\{"content":"Mock answer [0-9a-f]{8}"\}', 'null'),
             sprintf($Chunk, $model, '\{\}', '"length"'));
    push @f, '\{"id":"chatcmpl-(msg_)?[0-9a-f]+","object":"chat.completion.chunk","created":\d+,"model":"'
        . $model . '","choices":\[\],"usage":' . $Usage . '\}' if $o{usage};
    return frames(@f, '\[DONE\]');
}

sub gunzip {
    require IO::Uncompress::Gunzip;
    my ($in) = @_;
    my $out;
    IO::Uncompress::Gunzip::gunzip(\$in => \$out) or return "not gzip: $in";
    return $out;
}

# L2: what a stream stored in Redis, a fresh nginx (empty L1) replays
our $L2Yaml = ">>> helix.yaml\n$Helix::Providers\n$Streaming"
    . "cache:\n  l2:\n    enabled: true\nredis:\n  host: 127.0.0.1\n  port: $ENV{TEST_NGINX_REDIS_PORT}\n";
our $L2Chat = qq{POST /v1/chat/completions
{"model": "claude-3-haiku-20240307", "stream": true, "max_tokens": 3, "messages": [{"role": "user", "content": "Hello"}]}};

sub l2_stored {
    for (1 .. 200) {
        my $k = `redis-cli -p $ENV{TEST_NGINX_REDIS_PORT} --scan --pattern 'completion:claude:*' 2>&1`;
        return "stored" if $k =~ /\S/;
        select(undef, undef, undef, 0.05);
    }
    return "not stored";
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: OpenAI provider, chat client: role first, [DONE] last; usage only when asked for
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 main::chat("gpt-4o"),
 main::chat("gpt-4o", ', "stream_options": {"include_usage": true}'),
 "GET /mock/openai/stats"]
--- response_body_like eval
["",
 main::chat_frames("gpt-4o"),
 main::chat_frames("gpt-4o", usage => 1),
 '"path":"/v1/chat/completions".*"body":\{"model":"gpt-4o","stream":true,"max_tokens":3,"stream_options":\{"include_usage":true\},"messages":']
--- response_headers eval
["",
 "Content-Type: text/event-stream\nCache-Control: no-cache\nX-Accel-Buffering: no\nX-Helix-Provider: openai\n!Content-Length",
 "Content-Type: text/event-stream", ""]
--- raw_response_headers_like eval
["", "Transfer-Encoding: chunked", "", ""]
--- no_error_log
[error]



=== TEST 2: Anthropic provider, chat client: message_start, deltas, message_delta, message_stop
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 main::chat("claude-3-haiku-20240307"),
 main::chat("claude-3-haiku-20240307", ', "stream_options": {"include_usage": true}'),
 "GET /mock/claude/stats"]
--- response_body_like eval
["",
 main::chat_frames("claude-3-haiku-20240307"),
 main::chat_frames("claude-3-haiku-20240307", usage => 1),
 '"path":"/v1/messages".*"body":\{"model":"claude-3-haiku-20240307","messages":\[\{"role":"user","content":"Hello"\}\],"max_tokens":3,"stream":true\}']
--- response_headers eval
["", "Content-Type: text/event-stream\nX-Helix-Provider: claude", "", ""]
--- no_error_log
[error]



=== TEST 3: Gemini provider, chat client: streamGenerateContent?alt=sse, CRLF events
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 main::chat("gemini-1.5-flash"),
 main::chat("gemini-1.5-flash", ', "stream_options": {"include_usage": true}'),
 "GET /mock/gemini/stats"]
--- response_body_like eval
["",
 main::chat_frames("gemini-1.5-flash"),
 main::chat_frames("gemini-1.5-flash", usage => 1),
 '"path":"/v1beta/models/gemini-1.5-flash:streamGenerateContent","query":"alt=sse"']
--- response_headers eval
["", "Content-Type: text/event-stream\nX-Helix-Provider: gemini", "", ""]
--- no_error_log
[error]



=== TEST 4: the guide's /v1/completions frames from each provider type
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[main::completion("gpt-4o"), main::completion("claude-3-haiku-20240307"),
 main::completion("gemini-1.5-flash")]
--- response_body_like eval
[main::completion_frames(), main::completion_frames(), main::completion_frames()]
--- response_headers eval
["Content-Type: text/event-stream\nX-Helix-Provider: openai",
 "Content-Type: text/event-stream\nX-Helix-Provider: claude",
 "Content-Type: text/event-stream\nX-Helix-Provider: gemini"]
--- no_error_log
[error]



=== TEST 5: events split at every byte (one HTTP chunk per byte) with comment lines: the same frames
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"stream_split": 1, "stream_comments": 1, "count": 2}'),
 main::chat("gpt-4o"), main::completion("gpt-4o"),
 main::fault(claude => '{"stream_split": 1, "stream_comments": 1, "count": 2}'),
 main::chat("claude-3-haiku-20240307"), main::completion("claude-3-haiku-20240307"),
 main::fault(gemini => '{"stream_split": 1, "stream_comments": 1, "count": 2}'),
 main::chat("gemini-1.5-flash"), main::completion("gemini-1.5-flash"),
 "GET /mock/openai/faults", "GET /mock/claude/faults", "GET /mock/gemini/faults"]
--- response_body_like eval
["", "",
 main::chat_frames("gpt-4o"), main::completion_frames(), "",
 main::chat_frames("claude-3-haiku-20240307"), main::completion_frames(), "",
 main::chat_frames("gemini-1.5-flash"), main::completion_frames(),
 '\{"faults":\[\]\}', '\{"faults":\[\]\}', '\{"faults":\[\]\}']
--- no_error_log
[error]



=== TEST 6: several split points inside an event, every provider (7-byte pieces)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"stream_split": 7, "count": 1}'), main::chat("gpt-4o", ', "stream_options": {"include_usage": true}'),
 main::fault(claude => '{"stream_split": 7, "count": 1}'), main::chat("claude-3-haiku-20240307", ', "stream_options": {"include_usage": true}'),
 main::fault(gemini => '{"stream_split": 7, "count": 1}'), main::chat("gemini-1.5-flash", ', "stream_options": {"include_usage": true}')]
--- response_body_like eval
["", "", main::chat_frames("gpt-4o", usage => 1),
 "", main::chat_frames("claude-3-haiku-20240307", usage => 1),
 "", main::chat_frames("gemini-1.5-flash", usage => 1)]
--- no_error_log
[error]



=== TEST 7: the first frame reaches the client while the provider still holds the rest; leaving gives the place back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    max_concurrent: 1
    models: [gpt-4o]
streaming:
  flush_interval: 0
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"stream_delay_ms": 60000, "count": 1}'),
 main::chat("gpt-4o"),
 "GET /v1/health",
 main::chat("gpt-4o")]
--- timeout: 3
--- abort
--- wait_for_log eval
[undef, undef, undef, "client prematurely closed connection", undef]
--- response_body_like eval
["", "", '^data: \{"id":"chatcmpl-(msg_)?[0-9a-f]+","object":"chat.completion.chunk".*"delta":\{"role":"assistant","content":"".*\n\n$',
 '"inflight":0,"status":"ok"', main::chat_frames("gpt-4o")]



=== TEST 8: a provider error mid-stream: the frames so far, an error event in the client's format, the end
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"stream_error": 3, "count": 1}'), main::chat("gpt-4o", ', "max_tokens": 5'),
 main::fault(claude => '{"stream_error": 5, "count": 1}'), main::chat("claude-3-haiku-20240307", ', "max_tokens": 5'),
 main::fault(gemini => '{"stream_error": 2, "count": 2}'), main::chat("gemini-1.5-flash", ', "max_tokens": 5'),
 main::completion("gemini-1.5-flash", ', "max_tokens": 5')]
--- response_body_like eval
["",
 "", main::frames(main::chat_list("gpt-4o", pieces => 2, cut => 1), main::stream_error("openai"), '\[DONE\]'),
 "", main::frames(main::chat_list("claude-3-haiku-20240307", pieces => 2, cut => 1), main::stream_error("claude", "Overloaded"), '\[DONE\]'),
 "", main::frames(main::chat_list("gemini-1.5-flash", pieces => 2, cut => 1), main::stream_error("gemini"), '\[DONE\]'),
 main::frames('\{"content": "Mock", "done": false\}', '\{"content": " answer", "done": false\}',
              '\{"error": \{"message": "provider \\\\"gemini\\\\": mock_provider injected stream error", "type": "api_error", "param": null, "code": "provider_error"\}, "done": true\}')]
--- error_log
stream failed after the first frame: mock_provider injected stream error



=== TEST 9: a stream cut by the provider after the first frame ends with an error event
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 main::fault(claude => '{"drop": "mid", "count": 1}'), main::chat("claude-3-haiku-20240307", ', "max_tokens": 10')]
--- response_body_like eval
["", "", 'data: \{"error":\{"message":"provider \\\\"claude\\\\": the stream was cut","type":"api_error","param":null,"code":"provider_error"\}\}\n\ndata: \[DONE\]\n\n$']



=== TEST 10: failure before the first byte falls back: HTTP error, dropped connection, error event first
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"status": 503, "count": 1}'), main::chat("mock-shared"),
 main::fault(openai => '{"drop": "before", "count": 1}'), main::chat("mock-shared"),
 main::fault(openai => '{"stream_error": 0, "count": 1}'), main::chat("mock-shared"),
 main::fault(openai => '{"status": 503, "count": 1}'), main::fault(claude => '{"status": 529, "count": 1}'),
 main::fault(gemini => '{"stream_error": 0, "count": 1}'), main::chat("mock-shared"),
 "GET /mock/claude/stats"]
--- response_body_like eval
["",
 "", main::chat_frames("mock-shared"),
 "", main::chat_frames("mock-shared"),
 "", main::chat_frames("mock-shared"),
 "", "", "", '^\{"error":\{"message":"all providers failed: openai \(HTTP 503: mock_provider injected error \(status 503\)\); claude \(HTTP 529: .*\); gemini \(HTTP 200: mock_provider injected stream error\)","type":"api_error","param":null,"code":"provider_error"\}\}$',
 '"requests":\{"POST /v1/messages":4\}']
--- response_headers eval
["", "", "X-Helix-Provider: claude", "", "X-Helix-Provider: claude", "", "X-Helix-Provider: claude",
 "", "", "", "Content-Type: application/json", ""]
--- error_code eval
[200, 200, 200, 200, 200, 200, 200, 200, 200, 200, 502, 200]



=== TEST 11: timeouts.provider_streaming bounds a running stream; the provider's timeout bounds its first byte
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    timeout: 300ms
    models: [gpt-4o]
timeouts:
  provider_streaming: 1s
streaming:
  flush_interval: 0
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"stream_delay_ms": 5000, "count": 1}'), main::chat("gpt-4o"),
 main::fault(openai => '{"latency_ms": 3000, "count": 1}'), main::chat("gpt-4o"),
 "GET /v1/health"]
--- response_body_like eval
["",
 "", '^data: \{"id":"chatcmpl-(msg_)?[0-9a-f]+".*"delta":\{"role":"assistant".*\n\ndata: \{"error":\{"message":"provider \\\\"openai\\\\": timed out","type":"api_error","param":null,"code":"provider_error"\}\}\n\ndata: \[DONE\]\n\n$',
 "", '"all providers failed: openai \(timed out\)"',
 '"inflight":0,"status":"ok"']
--- error_code eval
[200, 200, 200, 200, 504, 200]
--- error_log
helix: provider "openai" timed out after



=== TEST 12: tool calls stream as OpenAI tool_calls deltas from every provider type
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { qq{POST /v1/chat/completions
{"model": "$_", "stream": true, "messages": [{"role": "user", "content": "weather in Paris?"}], "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}]}} }
 qw(gpt-4o claude-3-haiku-20240307 gemini-1.5-flash)]
--- response_body_like eval
[map { '^data: .*"delta":\{"role":"assistant".*"tool_calls":\[\{"index":0,"id":"(call|toolu)_[0-9a-f]+","type":"function","function":\{"name":"get_weather","arguments":"(\{\\\\"location\\\\":\\\\"Paris\\\\"\})?"\}\}\].*"finish_reason":"tool_calls"\}\]\S*\n\ndata: \[DONE\]\n\n$' } 1 .. 3]
--- no_error_log
[error]



=== TEST 13: a completed stream is cached as its non-streaming twin; a cached answer asked as a stream is replayed as frames
--- http_config eval: $::HttpConfig . "    helix_cache_key_header on;\n"
--- config eval: Helix::config()
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 main::chat("claude-3-haiku-20240307"),
 'POST /v1/chat/completions
{"model": "claude-3-haiku-20240307", "max_tokens": 3, "messages": [{"role": "user", "content": "Hello"}]}',
 main::chat("claude-3-haiku-20240307", ', "stream_options": {"include_usage": true}'),
 main::completion("gemini-1.5-flash"),
 'POST /v1/completions
{"model": "gemini-1.5-flash", "max_tokens": 3, "prompt": "Hello"}',
 'POST /v1/chat/completions
{"model": "gpt-4o", "max_tokens": 3, "messages": [{"role": "user", "content": "Hello"}]}',
 main::chat("gpt-4o"),
 "GET /mock/claude/stats", "GET /mock/gemini/stats", "GET /mock/openai/stats"]
--- response_body_like eval
["",
 main::chat_frames("claude-3-haiku-20240307"),
 '^\{"id":"chatcmpl-(msg_)?[0-9a-f]+","object":"chat.completion","created":\d+,"model":"claude-3-haiku-20240307","choices":\[\{"index":0,"message":\{"role":"assistant","content":"Mock answer [0-9a-f]{8}"\},"logprobs":null,"finish_reason":"length"\}\],"usage":' . $::Usage . '\}$',
 main::replay_frames("claude-3-haiku-20240307", usage => 1),
 main::completion_frames(),
 '^\{"id":"cmpl-[0-9a-f]+","object":"text_completion","created":\d+,"model":"gemini-1.5-flash","choices":\[\{"text":"Mock answer [0-9a-f]{8}","index":0,"logprobs":null,"finish_reason":"length"\}\],"usage":' . $::Usage . '\}$',
 '"object":"chat.completion"',
 main::replay_frames("gpt-4o"),
 '"total":1,', '"total":1,', '"total":1,']
--- response_headers eval
["", "X-Cache: MISS\nX-Helix-Provider: claude", "X-Cache: HIT\nContent-Type: application/json",
 "X-Cache: HIT\nX-Cache-Tier: L1\nContent-Type: text/event-stream\nX-Helix-Provider: claude",
 "X-Cache: MISS", "X-Cache: HIT", "X-Cache: MISS", "X-Cache: HIT\nContent-Type: text/event-stream", "", "", ""]
--- response_headers_like eval
["", "X-Cache-Key: completion:claude:claude-3-haiku-20240307:[0-9a-f]+", "X-Cache-Key: completion:claude:claude-3-haiku-20240307:[0-9a-f]+",
 "", "", "", "", "", "", "", ""]
--- no_error_log
[error]



=== TEST 14: a stream cut mid-way is not cached
--- http_config eval: $::HttpConfig
--- config eval: Helix::config()
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"stream_error": 3, "count": 1}'), main::chat("gpt-4o"),
 main::chat("gpt-4o"), "GET /mock/openai/stats"]
--- response_body_like eval
["", "", "injected stream error", main::chat_frames("gpt-4o"), '"total":2,']
--- response_headers eval
["", "", "X-Cache: MISS", "X-Cache: MISS", ""]



=== TEST 15: compression: gzip lets nginx's gzip compress the frames; without Accept-Encoding they are plain
--- http_config eval: Helix::http_config(extra => "    gzip on;\n    gzip_types text/event-stream;\n")
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\nstreaming:\n  flush_interval: 0\n  compression: gzip\n"
--- request eval
[main::chat("gemini-1.5-flash"), main::chat("gemini-1.5-flash"), main::chat("gemini-1.5-flash")]
--- more_headers eval
["Accept-Encoding: gzip", "", "Accept-Encoding: gzip"]
--- response_body_filters eval
Helix::per_request([\&main::gunzip, undef, \&main::gunzip])
--- response_body_like eval
[main::chat_frames("gemini-1.5-flash"), main::chat_frames("gemini-1.5-flash"), main::chat_frames("gemini-1.5-flash")]
--- response_headers eval
["Content-Encoding: gzip", "!Content-Encoding", "Content-Encoding: gzip"]



=== TEST 16: compression: none keeps streams plain even where nginx's gzip is on
--- http_config eval: Helix::http_config(extra => "    gzip on;\n    gzip_types text/event-stream;\n")
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
main::chat("gemini-1.5-flash")
--- more_headers
Accept-Encoding: gzip
--- response_body_like eval
main::chat_frames("gemini-1.5-flash")
--- response_headers
!Content-Encoding



=== TEST 17: buffered frames (flush_interval 100ms, buffer_size 4096) are the same frames
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\nstreaming:\n  buffer_size: 4096\n  flush_interval: 100ms\n"
--- request eval
["POST /mock/reset",
 main::fault(claude => '{"stream_delay_ms": 20, "count": 1}'),
 main::chat("claude-3-haiku-20240307", ', "max_tokens": 5'),
 main::completion("gpt-4o")]
--- response_body_like eval
["", "", main::chat_frames("claude-3-haiku-20240307", pieces => 5), main::completion_frames()]
--- no_error_log
[error]



=== TEST 18: what cannot be streamed says so
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\nstreaming:\n  enabled: false\n"
--- request eval
['POST /v1/embeddings
{"model": "text-embedding-3-small", "input": "x", "stream": true}',
 main::chat("gpt-4o"),
 'POST /v1/chat/completions
{"model": "gpt-4o", "stream": "yes", "messages": [{"role": "user", "content": "Hello"}]}']
--- error_code eval
[400, 400, 400]
--- response_body_like eval
['"message":"embeddings cannot be streamed","type":"invalid_request_error","param":"stream"',
 '"message":"streaming is disabled \(streaming.enabled in helix.yaml\)"',
 '"param":"stream"']



=== TEST 19: pieces of every size from 2 to 12 bytes: events cut at every alignment, the same frames
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 map { my $k = $_;
       map { (main::fault($_->[0] => qq{{"stream_split": $k, "count": 1}}), main::chat($_->[1])) }
           [openai => "gpt-4o"], [claude => "claude-3-haiku-20240307"], [gemini => "gemini-1.5-flash"] } 2 .. 12]
--- response_body_like eval
["",
 map { ("", main::chat_frames("gpt-4o"), "", main::chat_frames("claude-3-haiku-20240307"),
        "", main::chat_frames("gemini-1.5-flash")) } 2 .. 12]
--- no_error_log
[error]



=== TEST 20: resources.requests.max_response_body bounds a stream too
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\n$::Streaming\nresources:\n  requests:\n    max_response_body: 4KB\n"
--- request eval
'POST /v1/completions
{"model": "claude-3-haiku-20240307", "stream": true, "prompt": "Hello LONG:500"}'
--- response_body_like eval
'^data: \{"content": "Mock", "done": false\}\n\n.*data: \{"error": \{"message": "provider \\\\"claude\\\\": the stream is larger than max_response_body", "type": "api_error", "param": null, "code": "provider_error"\}, "done": true\}\n\n$'



=== TEST 21: L2: a complete stream is stored in Redis too
--- http_config eval: $::HttpConfig
--- config eval: Helix::config()
--- user_files eval: $::L2Yaml
--- request eval
["GET /v1/health", $::L2Chat, "GET /v1/health"]
--- response_body_filters eval
Helix::per_request([sub { `redis-cli -p $ENV{TEST_NGINX_REDIS_PORT} FLUSHALL`; "" }, undef, \&main::l2_stored])
--- response_body_like eval
["", main::chat_frames("claude-3-haiku-20240307"), "^stored\$"]
--- response_headers eval
["", "X-Cache: MISS", ""]



=== TEST 22: L2: a fresh nginx (empty L1) replays the stream from Redis
--- http_config eval: $::HttpConfig
--- config eval: Helix::config()
--- user_files eval: $::L2Yaml
--- request eval
["POST /mock/reset", $::L2Chat, "GET /mock/claude/stats"]
--- response_body_like eval
["", main::replay_frames("claude-3-haiku-20240307"), '"total":0,']
--- response_headers eval
["", "X-Cache: HIT\nX-Cache-Tier: L2\nContent-Type: text/event-stream\nX-Helix-Provider: claude", ""]
