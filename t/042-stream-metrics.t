# Stream metrics: time to the first frame per provider, and how streams
# ended (completed, failed after the first frame, client_closed); a
# replay from the cache is no provider stream and is not counted.
use Test::Nginx::Socket 'no_plan';
use HTTP::Tiny;
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => "    location = /metrics { helix_endpoint metrics; }\n");

sub fault { my ($p, $json) = @_; return "POST /mock/$p/faults\n$json"; }

sub chat {
    my ($content) = @_;
    return qq{POST /v1/chat/completions
{"model": "gpt-4o", "stream": true, "max_tokens": 3, "messages": [{"role": "user", "content": "$content $$"}]}};
}

# /metrics once the counters say what is expected (or the last answer)
sub metrics_when {
    my ($re) = @_;
    my $m = '';
    for (1 .. 200) {
        $m = HTTP::Tiny->new->get("http://127.0.0.1:$ENV{TEST_NGINX_SERVER_PORT}/metrics")->{content};
        return $m if $m =~ $re;
        select(undef, undef, undef, 0.05);
    }
    return $m;
}

sub streams {
    my ($m) = @_;
    return join ' ', map { /outcome="(\w+)"} (\d+)/ ? "$1=$2" : () }
        grep { /^helixagent_streams_total\{provider="openai"/ } split /\n/, $m;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a completed stream, its replay from the cache, a stream failed after its first frame
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    models: [gpt-4o]
streaming:
  flush_interval: 0
--- request eval
["POST /mock/reset", main::chat("one"), main::chat("one"),
 main::fault(openai => '{"stream_error": 3, "count": 1}'), main::chat("two"),
 "GET /metrics"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { $_[0] =~ /\[DONE\]/ ? "done" : $_[0] }, sub { $_[0] =~ /\[DONE\]/ ? "done" : $_[0] },
 sub { "" }, sub { $_[0] =~ /"error":.*\[DONE\]/s ? "error then done" : $_[0] },
 sub { my $m = main::metrics_when(qr/outcome="failed"\} 1/);
       my ($n) = $m =~ /^helixagent_stream_first_frame_seconds_count\{provider="openai"\} (\d+)$/m;
       my ($le) = $m =~ /^helixagent_stream_first_frame_seconds_bucket\{provider="openai",le="\+Inf"\} (\d+)$/m;
       main::streams($m) . " first frames $n/$le" }])
--- response_headers eval
["", "", "X-Cache: HIT", "", "", ""]
--- response_body eval
["", "done", "done", "", "error then done", "completed=1 failed=1 client_closed=0 first frames 2/2"]



=== TEST 2: a client that leaves mid-stream is counted as client_closed
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    models: [gpt-4o]
streaming:
  flush_interval: 0
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"stream_delay_ms": 60000, "count": 1}'),
 main::chat("three"),
 "GET /metrics"]
--- timeout: 3
--- abort
--- wait_for_log eval
[undef, undef, undef, "client prematurely closed connection"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub { $_[0] =~ /"role":"assistant"/ ? "first frame" : $_[0] },
 sub { main::streams(main::metrics_when(qr/outcome="client_closed"\} 1/)) }])
--- response_body eval
["", "", "first frame", "completed=0 failed=0 client_closed=1"]
