# Provider stream frames cut across TCP reads: the mock writes every byte of
# the stream (chunk-size lines included) as its own send, or cuts every event
# in two at a chosen offset; the chat stream the client assembles is the same
# text, frame for frame, as when nothing is cut, from every provider.
use Test::Nginx::Socket 'no_plan';
use HTTP::Tiny;
use JSON::PP;
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(cache => 0);
our $Yaml = ">>> helix.yaml\n$Helix::Providers\nstreaming:\n  flush_interval: 0\n";

our @Providers = ([openai => 'gpt-4o'], [claude => 'claude-3-haiku-20240307'],
                  [gemini => 'gemini-1.5-flash']);
our @Offsets = (0, 1, 2, 5, 6, 30, -1, -2, -3);

sub fault { my ($p, $json) = @_; return "POST /mock/$p/faults\n$json"; }

sub chat {
    my ($model, $prompt) = @_;
    return qq{POST /v1/chat/completions
{"model": "$model", "stream": true, "messages": [{"role": "user", "content": "$prompt"}]}};
}

# the provider's own answer to the prompt (the same text on every port)
sub answer {
    my ($prompt) = @_;
    my $r = HTTP::Tiny->new(timeout => 10)->post(
        "http://127.0.0.1:$ENV{TEST_NGINX_OPENAI_PORT}/v1/chat/completions",
        { content => encode_json({ model => 'gpt-4o',
              messages => [{ role => 'user', content => $prompt }] }) });
    die "mock: $r->{status} $r->{content}" unless $r->{success};
    return decode_json($r->{content})->{choices}[0]{message}{content};
}

# what a chat client makes of a stream: the text, its frames, how it ended
sub assemble {
    my ($body) = @_;
    return $body unless $body =~ /^data: /;
    my ($text, $n, $end) = ('', 0, 'no [DONE]');
    for my $f (split /\n\n/, $body) {
        $n++;
        my ($d) = $f =~ /^data: (.*)\z/s or return "bad frame: $f";
        if ($d eq '[DONE]') { $end = 'DONE'; next; }
        my $c = eval { decode_json($d) } or return "bad JSON: $d";
        my $t = $c->{choices}[0]{delta}{content};
        $text .= $t if defined $t;
    }
    return "$text|$n frames|$end";
}

our %Expect;

sub expect {
    my ($prompt, $frames) = @_;
    $Expect{$prompt} //= answer($prompt);
    return "$Expect{$prompt}|$frames frames|DONE";
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: every byte its own TCP send, and every event cut at offsets 0..30 and 1..3 from its end: the same text and frames
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 map { my ($p, $m) = @$_;
       (main::chat($m, "Hello LONG:12"),
        main::fault($p => '{"tcp_split": 1, "count": 1}'), main::chat($m, "Hello LONG:12"),
        map { (main::fault($p => qq{{"tcp_split_at": $_, "count": 1}}),
               main::chat($m, "Hello LONG:12")) } @::Offsets) } @::Providers]
--- response_body_filters eval
Helix::per_request([sub { "" },
 map { (\&main::assemble, (sub { "" }, \&main::assemble) x (1 + @::Offsets)) } @::Providers])
--- response_body eval
["",
 map { (main::expect("Hello LONG:12", 15), ("", main::expect("Hello LONG:12", 15)) x (1 + @::Offsets)) } @::Providers]
--- no_error_log
[error]



=== TEST 2: every byte its own TCP send with 1 ms between sends (each read sees one byte): the same text
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 map { (main::fault($_->[0] => '{"tcp_split": 1, "tcp_gap_ms": 1, "count": 1}'),
        main::chat($_->[1], "Hi LONG:5")) } @::Providers]
--- response_body_filters eval
Helix::per_request([sub { "" }, map { (sub { "" }, \&main::assemble) } @::Providers])
--- response_body eval
["", map { ("", main::expect("Hi LONG:5", 8)) } @::Providers]
--- no_error_log
[error]



=== TEST 3: the mock's cut replies are whole on the wire: a plain answer cut at every byte is the same JSON
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset",
 map { (main::fault($_->[0] => '{"tcp_split": 1, "count": 1}'),
        qq{POST /v1/chat/completions\n{"model": "$_->[1]", "messages": [{"role": "user", "content": "Hello LONG:12"}]}}) } @::Providers]
--- response_body_filters eval
Helix::per_request([sub { "" }, map { (sub { "" }, sub { JSON::PP::decode_json($_[0])->{choices}[0]{message}{content} }) } @::Providers])
--- response_body eval
["", map { ("", $::Expect{"Hello LONG:12"} // main::answer("Hello LONG:12")) } @::Providers]
--- no_error_log
[error]
