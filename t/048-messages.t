# Anthropic Messages clients (POST /v1/messages): translated to the
# gateway's chat request and back, through each provider format; an
# Anthropic provider gets the client's body as it came.
use Test::Nginx::Socket 'no_plan';
use JSON::PP;
use Helix;

our $HttpConfig = Helix::http_config();
our $Extra = "    location = /v1/messages { helix_endpoint messages; }\n"
           . "    location = /v1/messages/count_tokens { helix_endpoint messages; }\n";
our $Config = Helix::config(cache => 0, extra => $Extra);
our $Cached = Helix::config(extra => $Extra);
our $Yaml = ">>> helix.yaml\n$Helix::Providers\nstreaming:\n  flush_interval: 0\n";

our @Models = ('gpt-4o', 'claude-3-haiku-20240307', 'gemini-1.5-flash');

sub msg {
    my ($model, $body) = @_;
    return qq{POST /v1/messages\n{"model": "$model", "max_tokens": 100, $body}};
}

# a Messages answer, the parts a test compares (the id only by its form)
sub summary {
    my ($b) = @_;
    my $a = eval { decode_json($_[0]) } or return "bad JSON: $_[0]";
    my @c = map {
        $_->{type} eq 'text' ? "text:" . substr($_->{text}, 0, 60)
        : $_->{type} eq 'tool_use' ? "tool_use:$_->{name}:" . ($_->{id} =~ /\S/ ? 'id' : 'noid')
                                     . ":" . JSON::PP->new->canonical->encode($_->{input})
        : "other:$_->{type}" } @{ $a->{content} };
    return join '|', ($a->{id} =~ /^msg_/ ? 'msg_' : "id:$a->{id}"), $a->{type},
        $a->{role}, $a->{stop_reason}, @c,
        "in>0:" . ($a->{usage}{input_tokens} > 0 ? 1 : 0),
        "out:$a->{usage}{output_tokens}";
}

# a Messages stream as a client sees it: event names in order, the text,
# the tool input, stop reason, usage
sub events {
    my ($body) = @_;
    my (@names, $text, $json, $stop, $out, %seen);
    $text = ''; $json = '';
    for my $f (split /\n\n/, $body) {
        my ($e) = $f =~ /^event: (\S+)\n/ or return "no event: $f";
        my ($d) = $f =~ /^data: (.*)\z/m or return "no data: $f";
        my $j = eval { decode_json($d) } or return "bad JSON: $d";
        return "type $j->{type} under $e" unless $j->{type} eq $e;
        push @names, $e unless $names[-1] && $names[-1] eq $e;
        if ($e eq 'content_block_delta') {
            $text .= $j->{delta}{text} // '';
            $json .= $j->{delta}{partial_json} // '';
        }
        if ($e eq 'content_block_start' && $j->{content_block}{type} eq 'tool_use') {
            $text .= "[tool_use $j->{content_block}{name}"
                . ($j->{content_block}{id} ? ' id' : '') . "]";
        }
        if ($e eq 'message_delta') {
            $stop = $j->{delta}{stop_reason};
            $out = $j->{usage}{output_tokens};
        }
        if ($e eq 'error') { $text .= "[error $j->{error}{type}]"; }
    }
    return join '|', join(',', @names), substr($text, 0, 60), $json ? "json" : "nojson",
        $stop // '-', "out:" . ($out // '-');
}

sub err {
    my $a = eval { decode_json($_[0]) } or return "bad JSON: $_[0]";
    return "$a->{type}:$a->{error}{type}:" . (length($a->{error}{message}) ? 'msg' : '');
}

# the second of a pair: "the same" answer as the first, or what differs
our $Last;
sub pair {
    my $a = eval { decode_json($_[0]) } or return "bad JSON: $_[0]";
    my ($h, $to) = $a->{content}[0]{text} =~ /^Mock answer (\w+) to: (\S+ \[[^\]]*\])/
        or return $_[0];
    if (defined $Last) { my $r = $Last eq $h ? "the same" : "$Last vs $h"; undef $Last; return $r; }
    $Last = $h;
    return $to;
}

# a stream's events kept (keep), then another's compared with them (same)
our $Prev = '';
sub keep { $Prev = events($_[0]); return ""; }
sub same { my $e = events($_[0]); return $e eq $Prev ? "the same" : "$Prev\nvs\n$e"; }

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a text request through each provider: a Messages answer (id, stop reason, usage)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { main::msg($_, q{"messages": [{"role": "user", "content": "Hello there"}]}) } @::Models]
--- response_body_filters eval
Helix::per_request([(\&main::summary) x 3])
--- response_body_like eval
[("^msg_\\|message\\|assistant\\|end_turn\\|text:Mock answer [0-9a-f]{8} to: Hello there [\\w ]+\\|in>0:1\\|out:30\$") x 3]
--- no_error_log
[error]



=== TEST 2: streams through each provider: Anthropic's events, in order, with the text, stop reason and usage
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { main::msg($_, q{"stream": true, "messages": [{"role": "user", "content": "Hello there"}]}) } @::Models]
--- response_body_filters eval
Helix::per_request([(\&main::events) x 3])
--- response_body_like eval
[("^message_start,ping,content_block_start,content_block_delta,content_block_stop,message_delta,message_stop\\|Mock answer [0-9a-f]{8} to: Hello there[^|]*\\|nojson\\|end_turn\\|out:30\$") x 3]
--- response_headers
Content-Type: text/event-stream
--- no_error_log
[error]



=== TEST 3: tools: a tool_use block out (id kept, input an object), non-stream and stream, through each provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { my $m = $_;
       (main::msg($m, q{"tools": [{"name": "get_weather", "description": "the weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}], "messages": [{"role": "user", "content": "what is the weather in Paris"}]}),
        main::msg($m, q{"stream": true, "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}], "messages": [{"role": "user", "content": "what is the weather in Paris"}]})) } @::Models]
--- response_body_filters eval
Helix::per_request([(\&main::summary, \&main::events) x 3])
--- response_body_like eval
[("^msg_\\|message\\|assistant\\|tool_use\\|tool_use:get_weather:id:\\{\"\\w+\":\"[^\"]*\"\\}\\|in>0:1\\|out:3\$",
  "^message_start,ping,content_block_start,content_block_delta,content_block_stop,message_delta,message_stop\\|\\[tool_use get_weather id\\]\\|json\\|tool_use\\|out:3\$") x 3]
--- no_error_log
[error]



=== TEST 4: tool_result in (ids kept): the same answer from each provider for the whole conversation
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { main::msg($_, q{"tools": [{"name": "get_weather", "input_schema": {"type": "object"}}], "messages": [{"role": "user", "content": "what is the weather in Paris"}, {"role": "assistant", "content": [{"type": "text", "text": "Let me see."}, {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}]}, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny, 21C"}]}]}) } @::Models]
--- response_body_filters eval
Helix::per_request([(\&main::summary) x 3])
--- response_body_like eval
[("^msg_\\|message\\|assistant\\|end_turn\\|text:Mock answer ([0-9a-f]{8}) to: \\[result get_weather\\] sunny, 21C \\w+\\|in>0:1\\|out:30\$") x 3]
--- no_error_log
[error]



=== TEST 5: system as a string and as blocks, images base64 and by URL: each provider sees the same conversation (the mock's hash of it is the same)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { my $m = $_;
       (main::msg($m, q{"system": "You are terse.", "messages": [{"role": "user", "content": [{"type": "text", "text": "Describe"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}, {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]}]}),
        main::msg($m, q{"system": [{"type": "text", "text": "You are terse."}], "messages": [{"role": "user", "content": [{"type": "text", "text": "Describe"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}, {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}]}]})) } @::Models]
--- response_body_filters eval
Helix::per_request([(\&main::pair) x 6])
--- response_body eval
[("Describe [image image/png 4c4b6a3b]", "the same") x 3]
--- no_error_log
[error]



=== TEST 6: max_tokens, stop_sequences, temperature, top_p and metadata.user_id reach an OpenAI provider as its own fields; the stop reasons come back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 qq{POST /v1/messages\n{"model": "gpt-4o", "max_tokens": 5, "temperature": 0.5, "top_p": 0.9, "stop_sequences": ["zzz", "qqq"], "metadata": {"user_id": "u-42"}, "messages": [{"role": "user", "content": "Hello"}]}},
 "GET /mock/openai/stats",
 qq{POST /v1/messages\n{"model": "gpt-4o", "max_tokens": 100, "stop_sequences": ["answer"], "messages": [{"role": "user", "content": "Hello"}]}},
 qq{POST /v1/messages\n{"model": "gpt-4o", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "Hello"}]}}]
--- response_body_filters eval
Helix::per_request([sub { "" }, \&main::summary,
 sub { my $b = decode_json($_[0])->{last_request}{body};
       JSON::PP->new->canonical->encode({ map { $_ => $b->{$_} } qw(max_tokens temperature top_p stop user) }) },
 \&main::summary, \&main::events])
--- response_body_like eval
["", "^msg_\\|message\\|assistant\\|max_tokens\\|text:Mock answer \\w+ to: Hello\\|in>0:1\\|out:5\$",
 '^\{"max_tokens":5,"stop":\["zzz","qqq"\],"temperature":0.5,"top_p":0.9,"user":"u-42"\}$',
 "^msg_\\|message\\|assistant\\|end_turn\\|text:Mock \\|in>0:1\\|out:\\d+\$",
 "\\|max_tokens\\|out:5\$"]
--- no_error_log
[error]



=== TEST 7: to an Anthropic provider the client's body goes as it came, unknown fields and all; its answer comes back as it came
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 qq{POST /v1/messages\n{"model": "claude-3-haiku-20240307", "max_tokens": 100, "top_k": 5, "x_future": {"a": [1, 2]}, "stop_sequences": ["answer"], "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello", "cache_control": {"type": "ephemeral"}}]}]}},
 "GET /mock/claude/stats",
 qq{POST /v1/messages\n{"model": "claude-3-haiku-20240307", "max_tokens": 100, "x_future": 1, "stream": true, "messages": [{"role": "user", "content": "Hello"}]}},
 "GET /mock/claude/stats"]
--- response_body_filters eval
Helix::per_request([sub { "" },
 sub { my $a = decode_json($_[0]); "$a->{stop_reason} $a->{stop_sequence}" },
 sub { my $b = decode_json($_[0])->{last_request}{body};
       JSON::PP->new->canonical->encode([$b->{top_k}, $b->{x_future}, $b->{messages}[0]{content}[0]{cache_control}]) },
 \&main::events,
 sub { my $b = decode_json($_[0])->{last_request}{body}; "$b->{x_future} $b->{stream}" }])
--- response_body_like eval
["", "^stop_sequence answer\$", '^\[5,\{"a":\[1,2\]\},\{"type":"ephemeral"\}\]$',
 "^message_start,ping,content_block_start,content_block_delta,content_block_stop,message_delta,message_stop\\|", "^1 (1|true)\$"]
--- no_error_log
[error]



=== TEST 8: the cache: a repeated Messages request is answered without a provider call, and a chat request asking the same thing shares the entry (each in its own format); a repeated stream replays as Messages events
--- http_config eval: $::HttpConfig
--- config eval: $::Cached
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 qq{POST /v1/messages\n{"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "cache me"}]}},
 qq{POST /v1/messages\n{"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "cache me"}]}},
 qq{POST /v1/messages\n{"messages": [{"role": "user", "content": "cache me"}], "model": "gpt-4o", "max_tokens": 50}},
 qq{POST /v1/chat/completions\n{"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "cache me"}]}},
 qq{POST /v1/messages\n{"model": "gpt-4o", "max_tokens": 50, "stream": true, "messages": [{"role": "user", "content": "cache me"}]}},
 "GET /mock/openai/stats"]
--- response_body_filters eval
Helix::per_request([sub { "" }, (\&main::summary) x 3,
 sub { decode_json($_[0])->{object} }, \&main::events,
 sub { decode_json($_[0])->{requests}{"POST /v1/chat/completions"} }])
--- response_body_like eval
["", ("^msg_\\|message\\|assistant\\|end_turn\\|text:Mock answer \\w+ to: cache me") x 3,
 "^chat.completion\$",
 "^message_start,ping,content_block_start,content_block_delta,content_block_stop,message_delta,message_stop\\|Mock answer \\w+ to: cache me",
 "^1\$"]
--- raw_response_headers_like eval
["", "X-Cache: MISS", "X-Cache: HIT", "X-Cache: HIT", "X-Cache: HIT", "X-Cache: HIT", ""]
--- no_error_log
[error]



=== TEST 8b: a repeat of the same bytes is the first answer, byte for byte, from a copy kept in the Messages format (its key the answer's and ":anthropic", the format's name): no translation on a hit
--- http_config eval: $::HttpConfig . "    helix_cache_key_header on;\n"
--- config eval: $::Cached
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 map({ qq{POST /v1/messages\n{"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "same bytes"}]}} } 1..3),
 "GET /mock/openai/stats"]
--- response_body_filters eval
Helix::per_request([sub { "" },
 sub { $main::First = $_[0]; "first" },
 sub { $_[0] eq $main::First ? "same as the first" : "differs: $_[0]" },
 sub { $_[0] eq $main::First ? "same as the first" : "differs: $_[0]" },
 sub { decode_json($_[0])->{requests}{"POST /v1/chat/completions"} }])
--- response_body eval
["", "first", "same as the first", "same as the first", "1"]
--- raw_response_headers_like eval
["", "X-Cache-Key: completion:openai:gpt-4o:[0-9a-f]{32}\\r\\nX-Cache: MISS\\r",
 "X-Cache: HIT\\r\\nX-Cache-Tier: L1\\r\\nX-Cache-Key: completion:openai:gpt-4o:[0-9a-f]{32}:anthropic\\r",
 "X-Cache: HIT\\r\\nX-Cache-Tier: L1\\r\\nX-Cache-Key: completion:openai:gpt-4o:[0-9a-f]{32}:anthropic\\r", ""]
--- no_error_log
[error]



=== TEST 9: errors in Anthropic's shape and statuses: 400 (bad request, invalid JSON), 404 (unknown model), 413, 401 (no key), 429 (a provider's), 529 (no provider can take it)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 qq{POST /v1/messages\n{"model": "gpt-4o", "messages": [{"role": "user", "content": "no max_tokens"}]}},
 qq{POST /v1/messages\n{"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}},
 qq{POST /v1/messages\nnot json},
 qq{POST /v1/messages\n{"model": "no-such-model", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}},
 qq{POST /v1/messages\n{"model": "claude-3-haiku-20240307", "max_tokens": 5, "messages": [{"role": "user", "content": "x MOCK_STATUS:400"}]}}]
--- response_body_filters eval
Helix::per_request([sub { "" }, (\&main::err) x 5])
--- response_body eval
["", ("error:invalid_request_error:msg") x 3, "error:not_found_error:msg", "error:invalid_request_error:msg"]
--- error_code eval
[200, 400, 400, 400, 404, 400]



=== TEST 10: 413, 401 (no key, x-api-key unknown), 200 with x-api-key, 429 (the key's limit) in Anthropic's shape
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml
$Helix::Providers
resources:
  requests:
    max_request_body: 300
auth:
  enabled: true
  keys:
    - name: ant
      key: sk-ant-client-0123456789abcdef0123456789abcdef
      requests_per_minute: 2
rate_limit:
  window: 1h
"
--- request eval
[qq{POST /v1/messages
{"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "@{[ 'x' x 400 ]}"}]}},
 (qq{POST /v1/messages
{"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "key"}]}}) x 5]
--- more_headers eval
["x-api-key: sk-ant-client-0123456789abcdef0123456789abcdef", "", "x-api-key: sk-wrong-0123456789abcdef0123456789abcdef",
 ("x-api-key: sk-ant-client-0123456789abcdef0123456789abcdef") x 3]
--- response_body_filters eval
Helix::per_request([(\&main::err) x 3, sub { decode_json($_[0])->{type} }, (\&main::err) x 2])
--- response_body_like eval
["error:request_too_large:msg", "error:authentication_error:msg", "error:authentication_error:msg", "message",
 "error:rate_limit_error:msg", "error:rate_limit_error:msg"]
--- error_code eval
[413, 401, 401, 200, 429, 429]



=== TEST 11: 529 overloaded_error when no provider can take the request (its breaker open); a provider's error after the first event is an error event
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
["POST /mock/reset",
 qq{POST /v1/messages\n{"model": "mock-shared", "max_tokens": 5, "messages": [{"role": "user", "content": "x MOCK_STATUS:503"}]}},
 qq{POST /v1/messages\n{"model": "mock-shared", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}}]
--- response_body_filters eval
Helix::per_request([sub { "" }, (\&main::err) x 2])
--- response_body eval
["", "error:api_error:msg", "error:overloaded_error:msg"]
--- error_code eval
[200, 502, 529]
--- response_headers eval
["", "", "Retry-After: 30"]



=== TEST 12: provider stream frames cut at every byte (each byte its own TCP send) give the same Messages events as whole frames, through each provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 map { my ($p, $m) = @$_;
       (main::msg($m, q{"stream": true, "messages": [{"role": "user", "content": "Hello LONG:12"}]}),
        "POST /mock/$p/faults\n{\"tcp_split\": 1, \"count\": 1}",
        main::msg($m, q{"stream": true, "messages": [{"role": "user", "content": "Hello LONG:12"}]}),
        main::msg($m, q{"stream": true, "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}], "messages": [{"role": "user", "content": "weather in Paris"}]}),
        "POST /mock/$p/faults\n{\"tcp_split\": 1, \"count\": 1}",
        main::msg($m, q{"stream": true, "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}], "messages": [{"role": "user", "content": "weather in Paris"}]})) }
   ([openai => 'gpt-4o'], [claude => 'claude-3-haiku-20240307'], [gemini => 'gemini-1.5-flash'])]
--- response_body_filters eval
Helix::per_request([sub { "" }, map { (\&main::keep, sub { "" }, \&main::same, \&main::keep, sub { "" }, \&main::same) } 1 .. 3])
--- response_body eval
["", map { ("", "", "the same", "", "", "the same") } 1 .. 3]
