# A stream to a client that reads slowly: the provider is made to wait
# (nginx stops reading from it) instead of the frames piling up in
# memory, and every frame still arrives, in order, once the client reads.
use strict;
use warnings;
use Test::Nginx::Socket;
use Test::More;
use Helix;
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_RCVBUF);

my $port = $ENV{TEST_NGINX_SERVER_PORT};
my $words = 20000;

Test::Nginx::Socket::start_server(
    http_config => Helix::http_config(),
    config => Helix::config(cache => 0),
    user_files => ">>> helix.yaml\n$Helix::Providers\nstreaming:\n  flush_interval: 0\n",
) or BAIL_OUT("nginx did not start");

sub log_has {
    my ($re) = @_;
    for (1 .. 400) {    # up to 20 s, more under valgrind is not needed
        return 1 if Test::Nginx::Socket::error_log_text() =~ $re;
        select(undef, undef, undef, 0.05);
    }
    return 0;
}

for my $m (["openai", "gpt-4o"], ["gemini", "gemini-1.5-flash"]) {
    my ($p, $model) = @$m;
    my $body = qq({"model": "$model", "stream": true, "messages": [{"role": "user", "content": "Hello LONG:$words"}]});

    my $s = IO::Socket::INET->new(Proto => 'tcp') or die;
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 4096) or die;
    $s->connect(Socket::pack_sockaddr_in($port, Socket::inet_aton('127.0.0.1'))) or die "connect: $!";
    print $s "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\nContent-Length: " . length($body) . "\r\n\r\n$body";

    # not a byte read until nginx says the provider waits for us
    ok(log_has(qr/stream client is slow, provider "$p" waits for it/),
       "$p: the provider waits for a slow client");

    my $raw = '';
    while (1) {
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $raw .= $buf;
    }
    close $s;

    my ($head, $chunked) = split /\r\n\r\n/, $raw, 2;
    my $data = '';
    while ($chunked =~ /\G([0-9a-fA-F]+)\r\n/gc) {
        my $len = hex $1;
        last if $len == 0;
        $data .= substr($chunked, pos($chunked), $len);
        pos($chunked) += $len + 2;
    }

    my @frames = $data =~ /^data: (.*)\n\n/mg;
    my $text = join '', map { /"delta":\{"content":"([^"]*)"\}/ ? $1 : '' } @frames;
    my @words = split / /, $text;
    like($head, qr{^HTTP/1.1 200 .*text/event-stream}s, "$p: a stream");
    is(scalar(@words), $words, "$p: every piece arrived");

    # in order: the same text as the answer in one piece
    (my $plain = $body) =~ s/"stream": true, //;
    my $res = Test::Nginx::Socket::http_request('POST', '/v1/chat/completions',
        { 'Content-Type' => 'application/json' }, $plain, { timeout => 30 });
    my ($content) = $res->{body} =~ /"content":"([^"]*)"/;
    ok(defined $content && $content eq $text, "$p: the same text as the plain answer");
    is($frames[-1], '[DONE]', "$p: the stream ends with [DONE]");
    like($frames[-2], qr/"finish_reason":"stop"/, "$p: the finish chunk before it");
}

my $res = Test::Nginx::Socket::http_request('GET', '/v1/health', {}, '', {});
like($res->{body}, qr/"inflight":0,"status":"ok"/, "no provider call is left in flight");

Test::Nginx::Socket::stop_server();
done_testing();
