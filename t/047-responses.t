# OpenAI Responses clients (POST /v1/responses): translated to the
# gateway's chat request and back, through each provider format, with
# Responses' own stream events.
use Test::Nginx::Socket 'no_plan';
use JSON::PP;
use Helix;

our $HttpConfig = Helix::http_config();
our $Extra = "    location = /v1/responses { helix_endpoint responses; }\n";
our $Config = Helix::config(cache => 0, extra => $Extra);
our $Cached = Helix::config(extra => $Extra);
our $Metrics = Helix::config(cache => 0,
    extra => $Extra . "    location = /metrics { helix_endpoint metrics; }\n");
our $Yaml = ">>> helix.yaml\n$Helix::Providers\nstreaming:\n  flush_interval: 0\n";

our @Models = ('gpt-4o', 'claude-3-haiku-20240307', 'gemini-1.5-flash');

our $Tool = q{"tools": [{"type": "function", "name": "get_weather", "description": "the weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]};

sub resp {
    my ($model, $body) = @_;
    return qq{POST /v1/responses\n{"model": "$model", $body}};
}

# a Response object, the parts a test compares (ids only by their form)
sub summary {
    my $a = eval { decode_json($_[0]) } or return "bad JSON: $_[0]";
    my @o = map {
        $_->{type} eq 'message'
            ? "message:" . ($_->{id} =~ /^msg_/ ? 'id' : 'noid') . ":$_->{status}:"
              . join('', map { "$_->{type}:" . substr($_->{text}, 0, 60) } @{ $_->{content} })
        : $_->{type} eq 'function_call'
            ? "function_call:$_->{name}:" . ($_->{call_id} =~ /\S/ ? 'call_id' : 'nocall')
              . ":" . ($_->{id} =~ /^fc_/ ? 'id' : 'noid') . ":"
              . JSON::PP->new->canonical->encode(decode_json($_->{arguments}))
        : "other:$_->{type}" } @{ $a->{output} };
    my $u = $a->{usage};
    return join '|', ($a->{id} =~ /^resp_/ ? 'resp_' : "id:$a->{id}"), $a->{object},
        $a->{status}, ($a->{incomplete_details} ? $a->{incomplete_details}{reason} : '-'), @o,
        "in>0:" . ($u->{input_tokens} > 0 ? 1 : 0), "out:$u->{output_tokens}",
        "total:" . ($u->{total_tokens} == $u->{input_tokens} + $u->{output_tokens} ? 'ok' : 'bad');
}

# a Responses stream as a client sees it: event names in order (repeats
# folded), the text, the arguments, the final status and usage; every
# event's type is its name and the sequence numbers count from 0
sub events {
    my ($body) = @_;
    my (@names, $text, $args, $status, $out, $seq, $done);
    $text = ''; $args = ''; $seq = 0; $done = '';
    for my $f (split /\n\n/, $body) {
        my ($e) = $f =~ /^event: (\S+)\n/ or return "no event: $f";
        my ($d) = $f =~ /^data: (.*)\z/m or return "no data: $f";
        my $j = eval { decode_json($d) } or return "bad JSON: $d";
        return "type $j->{type} under $e" unless $j->{type} eq $e;
        return "sequence_number $j->{sequence_number}, $seq expected"
            unless defined $j->{sequence_number} && $j->{sequence_number} == $seq;
        $seq++;
        push @names, $e unless $names[-1] && $names[-1] eq $e;
        $text .= $j->{delta} if $e eq 'response.output_text.delta';
        $args .= $j->{delta} if $e eq 'response.function_call_arguments.delta';
        $done .= $j->{text} eq $text ? '' : '[text.done differs]' if $e eq 'response.output_text.done';
        $done .= $j->{arguments} eq $args ? '' : '[arguments.done differs]'
            if $e eq 'response.function_call_arguments.done';
        if ($e eq 'response.output_item.added' && $j->{item}{type} eq 'function_call') {
            $text .= "[function_call $j->{item}{name}" . ($j->{item}{call_id} ? ' call_id' : '') . "]";
        }
        if ($e eq 'response.completed' || $e eq 'response.incomplete') {
            $status = $j->{response}{status};
            $out = $j->{response}{usage}{output_tokens};
            $done .= "[" . scalar(@{ $j->{response}{output} }) . " items]";
        }
        $text .= "[error]" if $e eq 'error';
    }
    return join '|', join(',', @names), substr($text, 0, 60), $args ? "args" : "noargs",
        $status // '-', "out:" . ($out // '-'), $done;
}

sub err {
    my $a = eval { decode_json($_[0]) } or return "bad JSON: $_[0]";
    return "$a->{error}{type}:" . ($a->{error}{code} // '') . ":" . $a->{error}{message};
}

# the second of a pair: "the same" answer as the first, or what differs
our $Last;
sub pair {
    my $a = eval { decode_json($_[0]) } or return "bad JSON: $_[0]";
    my ($h, $to) = $a->{output}[0]{content}[0]{text} =~ /^Mock answer (\w+) to: (\S+ \[[^\]]*\])/
        or return $_[0];
    if (defined $Last) { my $r = $Last eq $h ? "the same" : "$Last vs $h"; undef $Last; return $r; }
    $Last = $h;
    return $to;
}

our $Prev = '';
sub keep { $Prev = events($_[0]); return ""; }
sub same { my $e = events($_[0]); return $e eq $Prev ? "the same" : "$Prev\nvs\n$e"; }

our $TextEvents = "response.created,response.in_progress,response.output_item.added,"
    . "response.content_part.added,response.output_text.delta,response.output_text.done,"
    . "response.content_part.done,response.output_item.done";
our $ToolEvents = "response.created,response.in_progress,response.output_item.added,"
    . "response.function_call_arguments.delta,response.function_call_arguments.done,"
    . "response.output_item.done";

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a text request through each provider (input a string, instructions): a Response object (id, status, output message, usage)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { main::resp($_, q{"instructions": "be brief", "input": "Hello there"}) } @::Models]
--- response_body_filters eval
Helix::per_request([(\&main::summary) x 3])
--- response_body_like eval
[("^resp_\\|response\\|completed\\|-\\|message:id:completed:output_text:Mock answer [0-9a-f]{8} to: Hello there [\\w ]+\\|in>0:1\\|out:30\\|total:ok\$") x 3]
--- no_error_log
[error]



=== TEST 2: streams through each provider: Responses' events in order, sequence numbers from 0, the text done as it was streamed, usage at the end
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { main::resp($_, q{"stream": true, "input": [{"role": "user", "content": "Hello there"}]}) } @::Models]
--- response_body_filters eval
Helix::per_request([(\&main::events) x 3])
--- response_body_like eval
[("^$::TextEvents,response.completed\\|Mock answer [0-9a-f]{8} to: Hello there[^|]*\\|noargs\\|completed\\|out:30\\|\\[1 items\\]\$") x 3]
--- response_headers
Content-Type: text/event-stream
--- no_error_log
[error]



=== TEST 3: function tools: a function_call item out (call_id, arguments a JSON string), non-stream and stream, through each provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { my $m = $_;
       (main::resp($m, qq{$::Tool, "input": "what is the weather in Paris"}),
        main::resp($m, qq{"stream": true, $::Tool, "tool_choice": "auto", "input": "what is the weather in Paris"})) } @::Models]
--- response_body_filters eval
Helix::per_request([(\&main::summary, \&main::events) x 3])
--- response_body_like eval
[("^resp_\\|response\\|completed\\|-\\|function_call:get_weather:call_id:id:\\{\"\\w+\":\"[^\"]*\"\\}\\|in>0:1\\|out:3\\|total:ok\$",
  "^$::ToolEvents,response.completed\\|\\[function_call get_weather call_id\\]\\|args\\|completed\\|out:3\\|\\[1 items\\]\$") x 3]
--- no_error_log
[error]



=== TEST 4: the round trip: function_call and function_call_output items in (call_id kept) give the same answer from each provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { main::resp($_, qq{$::Tool, "input": [{"role": "user", "content": "what is the weather in Paris"}, {"type": "function_call", "id": "fc_1", "call_id": "call_01", "name": "get_weather", "arguments": "{\\"city\\":\\"Paris\\"}"}, {"type": "function_call_output", "call_id": "call_01", "output": "sunny, 21C"}]}) } @::Models]
--- response_body_filters eval
Helix::per_request([(\&main::summary) x 3])
--- response_body_like eval
[("^resp_\\|response\\|completed\\|-\\|message:id:completed:output_text:Mock answer ([0-9a-f]{8}) to: \\[result get_weather\\] sunny, 21C \\w+\\|in>0:1\\|out:30\\|total:ok\$") x 3]
--- no_error_log
[error]



=== TEST 5: instructions or a developer message, input_text and input_image parts (a data: URL and a URL): each provider sees the same conversation
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { my $m = $_;
       (main::resp($m, q{"instructions": "You are terse.", "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Describe"}, {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}, {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "auto"}]}]}),
        main::resp($m, q{"input": [{"role": "developer", "content": "You are terse."}, {"role": "user", "content": [{"type": "input_text", "text": "Describe"}, {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}, {"type": "input_image", "image_url": "https://example.com/cat.png"}]}]})) } @::Models]
--- response_body_filters eval
Helix::per_request([(\&main::pair) x 6])
--- response_body eval
[("Describe [image image/png 4c4b6a3b]", "the same") x 3]
--- no_error_log
[error]



=== TEST 6: max_output_tokens, temperature, top_p, user and tool_choice reach an OpenAI provider as its own fields; the length stop is status "incomplete" (max_output_tokens), in a stream as response.incomplete
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 qq{POST /v1/responses\n{"model": "gpt-4o", "max_output_tokens": 5, "temperature": 0.5, "top_p": 0.9, "user": "u-42", "metadata": {"k": "v"}, $::Tool, "tool_choice": {"type": "function", "name": "get_weather"}, "input": "Hello"}},
 "GET /mock/openai/stats",
 qq{POST /v1/responses\n{"model": "gpt-4o", "max_output_tokens": 5, "input": "Hello"}},
 qq{POST /v1/responses\n{"model": "claude-3-haiku-20240307", "max_output_tokens": 5, "stream": true, "input": "Hello"}}]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" },
 sub { my $b = decode_json($_[0])->{last_request}{body};
       JSON::PP->new->canonical->encode({ map { $_ => $b->{$_} } qw(max_tokens temperature top_p user tool_choice) }) },
 \&main::summary, \&main::events])
--- response_body_like eval
["", "",
 '^\{"max_tokens":5,"temperature":0.5,"tool_choice":\{"function":\{"name":"get_weather"\},"type":"function"\},"top_p":0.9,"user":"u-42"\}$',
 "^resp_\\|response\\|incomplete\\|max_output_tokens\\|message:id:completed:output_text:Mock answer \\w+ to: Hello\\|in>0:1\\|out:5\\|total:ok\$",
 ",response.output_item.done,response.incomplete\\|[^|]*\\|noargs\\|incomplete\\|out:5\\|"]
--- no_error_log
[error]



=== TEST 7: the cache: a repeated Responses request is answered without a provider call, a chat request asking the same thing shares the entry (each in its own format), a repeated stream replays as Responses events
--- http_config eval: $::HttpConfig
--- config eval: $::Cached
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 qq{POST /v1/responses\n{"model": "gpt-4o", "max_output_tokens": 50, "input": "cache me"}},
 qq{POST /v1/responses\n{"model": "gpt-4o", "max_output_tokens": 50, "input": "cache me"}},
 qq{POST /v1/responses\n{"input": [{"role": "user", "content": "cache me"}], "model": "gpt-4o", "max_output_tokens": 50}},
 qq{POST /v1/chat/completions\n{"model": "gpt-4o", "max_tokens": 50, "messages": [{"role": "user", "content": "cache me"}]}},
 qq{POST /v1/responses\n{"model": "gpt-4o", "max_output_tokens": 50, "stream": true, "input": "cache me"}},
 "GET /mock/openai/stats"]
--- response_body_filters eval
Helix::per_request([sub { "" }, (\&main::summary) x 3,
 sub { decode_json($_[0])->{object} }, \&main::events,
 sub { decode_json($_[0])->{requests}{"POST /v1/chat/completions"} }])
--- response_body_like eval
["", ("^resp_\\|response\\|completed\\|-\\|message:id:completed:output_text:Mock answer \\w+ to: cache me") x 3,
 "^chat.completion\$",
 "^$::TextEvents,response.completed\\|Mock answer \\w+ to: cache me",
 "^1\$"]
--- raw_response_headers_like eval
["", "X-Cache: MISS", "X-Cache: HIT", "X-Cache: HIT", "X-Cache: HIT", "X-Cache: HIT", ""]
--- no_error_log
[error]



=== TEST 8: 400s in OpenAI's error object: no input, invalid JSON, a built-in tool, an item of an unknown type, a bad tool_choice, store and previous_response_id without storage; 404 for an unknown model
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[qq{POST /v1/responses\n{"model": "gpt-4o"}},
 qq{POST /v1/responses\nnot json},
 qq{POST /v1/responses\n{"model": "gpt-4o", "tools": [{"type": "web_search"}], "input": "x"}},
 qq{POST /v1/responses\n{"model": "gpt-4o", "input": [{"type": "computer_call", "call_id": "c"}]}},
 qq{POST /v1/responses\n{"model": "gpt-4o", "tool_choice": {"type": "file_search"}, "input": "x"}},
 qq{POST /v1/responses\n{"model": "gpt-4o", "store": true, "input": "x"}},
 qq{POST /v1/responses\n{"model": "gpt-4o", "previous_response_id": "resp_1", "input": "x"}},
 qq{POST /v1/responses\n{"model": "no-such-model", "input": "x"}}]
--- response_body_filters eval
Helix::per_request([(\&main::err) x 8])
--- response_body_like eval
["^invalid_request_error:invalid_value:input: a string or a non-empty array",
 "^invalid_request_error:invalid_json:",
 "^invalid_request_error:invalid_value:tools\\[0\\]: only function tools are supported \\(type \"web_search\"",
 "^invalid_request_error:invalid_value:input\\[0\\]: this item type cannot be translated",
 "^invalid_request_error:invalid_value:tool_choice:",
 "^invalid_request_error:invalid_value:store: true is not supported: this gateway keeps no responses",
 "^invalid_request_error:invalid_value:previous_response_id is not supported",
 "^\\w+:model_not_found:"]
--- error_code eval
[400, 400, 400, 400, 400, 400, 400, 404]



=== TEST 9: 413, 401 (no key, an unknown key), 200 with a key, all in OpenAI's error object
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
    - name: resp
      key: sk-resp-client-0123456789abcdef0123456789abcdef
"
--- request eval
[qq{POST /v1/responses
{"model": "gpt-4o", "input": "@{[ 'x' x 400 ]}"}},
 (qq{POST /v1/responses
{"model": "gpt-4o", "input": "key"}}) x 3]
--- more_headers eval
["Authorization: Bearer sk-resp-client-0123456789abcdef0123456789abcdef", "",
 "Authorization: Bearer sk-wrong-0123456789abcdef0123456789abcdef",
 "Authorization: Bearer sk-resp-client-0123456789abcdef0123456789abcdef"]
--- response_body_filters eval
Helix::per_request([(\&main::err) x 3, sub { decode_json($_[0])->{object} }])
--- response_body_like eval
["^\\w+:\\w*:.+", "^\\w+:\\w*:.+", "^\\w+:\\w*:.+", "^response\$"]
--- error_code eval
[413, 401, 401, 200]



=== TEST 10: provider stream frames cut at every byte (each byte its own TCP send) give the same Responses events as whole frames, text and tools, through each provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 map { my ($p, $m) = @$_;
       (main::resp($m, q{"stream": true, "input": "Hello LONG:12"}),
        "POST /mock/$p/faults\n{\"tcp_split\": 1, \"count\": 1}",
        main::resp($m, q{"stream": true, "input": "Hello LONG:12"}),
        main::resp($m, qq{"stream": true, $::Tool, "input": "weather in Paris"}),
        "POST /mock/$p/faults\n{\"tcp_split\": 1, \"count\": 1}",
        main::resp($m, qq{"stream": true, $::Tool, "input": "weather in Paris"})) }
   ([openai => 'gpt-4o'], [claude => 'claude-3-haiku-20240307'], [gemini => 'gemini-1.5-flash'])]
--- response_body_filters eval
Helix::per_request([sub { "" }, map { (\&main::keep, sub { "" }, \&main::same, \&main::keep, sub { "" }, \&main::same) } 1 .. 3])
--- response_body eval
["", map { ("", "", "the same", "", "", "the same") } 1 .. 3]



=== TEST 11: a provider that fails after the first event ends the stream with an error event (sequence numbers still in order); "provider" picks the provider as for chat
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 "POST /mock/openai/faults\n{\"drop\": \"mid\", \"count\": 1}",
 main::resp('gpt-4o', q{"stream": true, "input": "Hello LONG:40"}),
 main::resp('mock-shared', q{"provider": "claude", "input": "Hello"}),
 "GET /mock/claude/stats"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, \&main::events, \&main::summary,
 sub { decode_json($_[0])->{requests}{"POST /v1/messages"} }])
--- response_body_like eval
["", "", "^response.created,response.in_progress,response.output_item.added,response.content_part.added,response.output_text.delta,error\\|Mock answer [^|]*\\|noargs\\|-\\|out:-\\|\$",
 "^resp_\\|response\\|completed\\|", "^1\$"]



=== TEST 12: metrics count the requests under endpoint="responses"
--- http_config eval: $::HttpConfig
--- config eval: $::Metrics
--- user_files eval: $::Yaml
--- request eval
[main::resp('gpt-4o', q{"input": "count me"}), "GET /metrics"]
--- response_body_filters eval
Helix::per_request([sub { "" },
 sub { join ",", $_[0] =~ /^helixagent_request_duration_seconds_count\{endpoint="responses",status="(2xx)"\} (\d+)$/m }])
--- response_body eval
["", "2xx,1"]
--- no_error_log
[error]
