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
        $_->{type} eq 'text' ? "text:" . substr($_->{text}, 0, 40)
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
[("^msg_\\|message\\|assistant\\|end_turn\\|text:Mock answer [0-9a-f]{8} to: Hello there \\w+\\|in>0:1\\|out:30\$") x 3]
--- no_error_log
[error]
