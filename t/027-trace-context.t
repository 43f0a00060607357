# W3C trace context: the client's traceparent (or a new trace) goes on to
# the providers with the gateway's own span id and the client's
# tracestate; the answer carries the gateway's traceparent; error log
# lines of the request end with its trace id; "helix_trace off" does none
# of it.
use Test::Nginx::Socket 'no_plan';
use Helix;
use JSON::PP;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<'_EOC_');
    location = /untraced/v1/chat/completions {
        helix_endpoint chat_completions;
        helix_trace off;
    }
_EOC_

our $Yaml = ">>> helix.yaml\n$Helix::Providers";

our $Trace = '4bf92f3577b34da6a3ce929d0e0e4736';
our $Parent = '00f067aa0ba902b7';

sub chat {
    my ($content, $path) = @_;
    $path //= "/v1/chat/completions";
    return "POST $path\n"
        . qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "$content"}]});
}

# what the openai mock was last sent: its traceparent and tracestate
sub sent {
    my $stats = `curl -s -m 10 http://127.0.0.1:$ENV{TEST_NGINX_SERVER_PORT}/mock/openai/stats`;
    my $h = eval { JSON::PP::decode_json($stats)->{last_request}{headers} } || {};
    return "sent " . ($h->{traceparent} // "none") . " state " . ($h->{tracestate} // "none");
}

# one chat sent with curl: the answer's traceparent and what the mock got
sub both {
    my (@headers) = @_;
    my $base = "http://127.0.0.1:$ENV{TEST_NGINX_SERVER_PORT}";
    my $out = `curl -s -m 30 -D - -o /dev/null -H 'Content-Type: application/json' @{[ map { "-H '$_'" } @headers ]} --data-binary '{"model": "gpt-4o", "messages": [{"role": "user", "content": "both $$"}]}' $base/v1/chat/completions`;
    my ($tp) = $out =~ /^traceparent: (\S+)/mi;
    return "answer " . ($tp // "none") . " " . sent();
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: no traceparent: a new trace; the provider is sent the same traceparent the answer carries
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
main::chat("tc1")
--- response_headers_like
traceparent: ^00-[0-9a-f]{32}-[0-9a-f]{16}-01$
--- response_body_filters eval
sub { main::sent() }
--- response_body_like: ^sent 00-[0-9a-f]{32}-[0-9a-f]{16}-01 state none$



=== TEST 2: the client's trace goes on, with the gateway's own span id, its flags and its tracestate
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers eval
"traceparent: 00-$::Trace-$::Parent-00\ntracestate: congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
--- request eval
main::chat("tc2")
--- response_headers_like eval
"traceparent: ^00-$::Trace-(?!$::Parent)[0-9a-f]{16}-00\$"
--- response_body_filters eval
sub { main::sent() }
--- response_body_like eval
"^sent 00-$::Trace-(?!$::Parent)[0-9a-f]{16}-00 state congo=t61rcWkgMzE,rojo=00f067aa0ba902b7\$"



=== TEST 3: the answer's span id is the one the provider was sent
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
GET /v1/health
--- response_body_filters eval
sub { main::both("traceparent: 00-$::Trace-$::Parent-01") }
--- response_body_like eval
"^answer (00-$::Trace-[0-9a-f]{16}-01) sent \\1 state none\$"



=== TEST 4: what is not a traceparent starts a new trace (and its tracestate is not passed on)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers eval
["traceparent: 00-" . uc($::Trace) . "-$::Parent-01\ntracestate: a=b",
 "traceparent: 00-00000000000000000000000000000000-$::Parent-01",
 "traceparent: 00-$::Trace-0000000000000000-01",
 "traceparent: ff-$::Trace-$::Parent-01",
 "traceparent: 00-$::Trace-$::Parent-01-extra",
 "traceparent: 00-$::Trace-$::Parent",
 "traceparent: 01-$::Trace-$::Parent-01-future"]
--- request eval
[map { main::chat("tc4") } 1..7]
--- response_headers_like eval
[("traceparent: ^00-(?!$::Trace)[0-9a-f]{32}-[0-9a-f]{16}-01\$") x 6,
 "traceparent: ^00-$::Trace-[0-9a-f]{16}-01\$"]
--- response_body_like eval
[("chat.completion") x 7]



=== TEST 5: an error log line of the request ends with its trace id; refusals carry traceparent too
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  dead:
    type: openai
    models: [mock-shared]
--- more_headers eval
["traceparent: 00-$::Trace-$::Parent-01", ""]
--- request eval
['POST /v1/chat/completions
{"model": "mock-shared", "messages": [{"role": "user", "content": "tc5"}]}',
 "POST /v1/chat/completions\n{broken"]
--- error_code eval
[502, 400]
--- response_headers_like eval
["traceparent: ^00-$::Trace-[0-9a-f]{16}-01\$", "traceparent: ^00-[0-9a-f]{32}-[0-9a-f]{16}-01\$"]
--- error_log eval
qr/connect\(\) failed .*, trace: 4bf92f3577b34da6a3ce929d0e0e4736/



=== TEST 6: helix_trace off: no traceparent in the answer, the client's goes nowhere
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers eval
"traceparent: 00-$::Trace-$::Parent-01"
--- request eval
main::chat("tc6", "/untraced/v1/chat/completions")
--- response_headers
traceparent:
--- response_body_filters eval
sub { main::sent() }
--- response_body chomp
sent none state none
