# A Redis that answers with what no Redis of ours would: an array header
# of a million elements, or a bulk string that never ends.  The array is
# refused before anything is allocated for it, the endless string is cut
# at the largest value we store (max_response_body and 1 MiB): the
# connection ends, the request is answered from the provider, the worker
# stays small.  The stand-in is a Perl listener on ports of this test.
use Test::Nginx::Socket 'no_plan';
use Helix;
use IO::Socket::INET;

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";
our $APort = $Port + 12;     # the array
our $SPort = $Port + 13;     # the endless string
our @Kids;

# a listener answering every command with $head, then (if $endless) with
# bytes until the client leaves
sub hostile {
    my ($port, $head, $endless) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
        Listen => 16, ReuseAddr => 1, Proto => 'tcp') or die "listen $port: $!";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $SIG{PIPE} = 'IGNORE';
        while (my $c = $l->accept) {
            next if fork();
            my $buf;
            $c->sysread($buf, 65536);
            $c->syswrite($head);
            if ($endless) {
                my $chunk = 'x' x 65536;
                while (defined $c->syswrite($chunk)) { }
            } else {
                while ($c->sysread($buf, 65536)) { }
            }
            exit 0;
        }
        exit 0;
    }
    close $l;
    push @Kids, $pid;
}

hostile($APort, "*1000000\r\n", 0);
hostile($SPort, "\$1000000000\r\n", 1);

END { kill 'TERM', @Kids if @Kids; }

our $HttpConfig = Helix::http_config();
our $Config = Helix::config();

sub yaml {
    my ($port) = @_;
    return ">>> helix.yaml\n$Helix::Providers"
        . "resources:\n  requests:\n    max_response_body: 1m\n"
        . "cache:\n  l2:\n    enabled: true\n"
        . "redis:\n  host: 127.0.0.1\n  port: $port\n  pool:\n    size: 2\n    timeout: 5s\n";
}

# the RSS of this nginx (its master, and its workers if it has any)
sub rss_kb {
    my $pid = `cat $ENV{TEST_NGINX_SERVER_ROOT}/logs/nginx.pid`;
    chomp $pid;
    my $kb = 0;
    $kb += $_ for split /\s+/, `ps -o rss= -p $pid; ps -o rss= --ppid $pid`;
    return $kb;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: an array header of a million elements: refused before it is allocated, the connection ends, the answer comes from the provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml($::APort)
--- request eval
"POST /v1/chat/completions\n" . qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "hostile array $$"}]})
--- response_headers
X-Cache: MISS
--- response_body_like: "object":"chat.completion"
--- error_log
helix: a redis reply array of 1000000 elements refused (at most 65536), connection closed
--- no_error_log
[alert]



=== TEST 2: a bulk string that never ends: cut past max_response_body and 1 MiB, the answer comes from the provider, the workers stay small
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml($::SPort)
--- request eval
"POST /v1/chat/completions\n" . qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "hostile string $$"}]})
--- response_headers
X-Cache: MISS
--- response_body_filters eval
sub { my $kb = main::rss_kb(); ($_[0] =~ /"object":"chat.completion"/ ? "answered" : $_[0])
    . ($kb > 0 && $kb < 200 * 1024 ? ", workers small" : ", workers at $kb kB") }
--- response_body chomp
answered, workers small
--- error_log
helix: a redis reply of more than 2097152 bytes, connection closed
--- no_error_log
[alert]
