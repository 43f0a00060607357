# A Redis that stops answering (SIGSTOP: connections stay open, nothing
# comes back).  After redis.breaker.failures commands in a row fail, the
# worker's breaker opens: requests are answered from the providers and
# L1 (and limited by the local buckets) without a command being sent,
# the opening is logged once, and after SIGCONT one probe closes the
# breaker and L2 is used again.  A private redis-server on a port of this
# test's own; every exit path sends it SIGCONT and shuts it down.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";
our $RPort = $Port + 10;
our $Dir = "/tmp/helix-test-redis-silent-$$";
our $Stopped = 0;

sub redis_cli { my (@args) = @_; my $a = join ' ', map { "'$_'" } @args;
    my $out = `redis-cli -p $RPort $a 2>&1`; chomp $out; return $out; }

sub redis_pid { my $p = `cat $Dir/redis.pid 2>/dev/null`; chomp $p; return $p; }

sub redis_stop { kill 'STOP', redis_pid(); $Stopped = 1; }
sub redis_cont { kill 'CONT', redis_pid() if $Stopped; $Stopped = 0; }

system("mkdir -p $Dir && redis-server --port $RPort --bind 127.0.0.1 "
    . "--save '' --appendonly no --daemonize yes --dir $Dir --pidfile $Dir/redis.pid "
    . "--logfile $Dir/redis.log") == 0 or die "redis-server failed";
for (1 .. 100) {
    last if redis_cli('PING') eq 'PONG';
    select(undef, undef, undef, 0.05);
}

add_cleanup_handler(sub {
    redis_cont();
    redis_cli('SHUTDOWN', 'NOSAVE');
    for (1 .. 100) {
        last if redis_cli('PING') =~ /refused/i;
        select(undef, undef, undef, 0.05);
    }
    system("rm -rf $Dir");
});
END { redis_cont(); }

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => "    location = /metrics { helix_endpoint metrics; }\n");

our $Breaker = "  pool:\n    size: 2\n    timeout: 1s\n"
    . "  breaker:\n    failures: 2\n    backoff: 300ms\n    max_backoff: 1s\n";

our $L2 = ">>> helix.yaml\n$Helix::Providers"
    . "cache:\n  l2:\n    enabled: true\n"
    . "redis:\n  host: 127.0.0.1\n  port: $RPort\n$Breaker";

our $Limits = ">>> helix.yaml\n$Helix::Providers"
    . "redis:\n  host: 127.0.0.1\n  port: $RPort\n$Breaker"
    . "auth:\n  enabled: true\n  keys:\n    - name: silent-$$\n      key: sk-silent-0123456789abcdef0123456789abcdef\n"
    . "      requests_per_minute: 3\n"
    . "rate_limit:\n  window: 1h\n";

sub chat_body { my ($c) = @_;
    return qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "$c $$"}]}); }

# one chat completion: (status, response headers)
sub chat {
    my ($c, @headers) = @_;
    my $h = join ' ', map { "-H '$_'" } @headers;
    my $out = `curl -s -m 30 -D - -o /dev/null $h --data-binary '@{[ chat_body($c) ]}' $Base/v1/chat/completions`;
    my ($code) = $out =~ m{^HTTP/\S+ (\d+)};
    return ($code // 0, $out);
}

sub metrics { return scalar `curl -s -m 30 $Base/metrics`; }

sub val {
    my ($text, $name) = @_;
    my $re = quotemeta $name;
    return $text =~ /^$re (\S+)$/m ? $1 : 'none';
}

sub state { return val($_[0], qq(helixagent_redis_breaker_state{state="$_[1]"})); }
sub opened { return val($_[0], 'helixagent_redis_breaker_opened_total'); }
sub rejected { return val($_[0], 'helixagent_redis_breaker_rejected_total'); }

sub wait_metrics {
    my ($ok) = @_;
    my $t = '';
    for (1 .. 600) {
        $t = metrics();
        return $t if $ok->($t);
        select(undef, undef, undef, 0.05);
    }
    return $t;
}

sub wait_keys {
    my ($n) = @_;
    my $k = 0;
    for (1 .. 400) {
        $k = () = redis_cli('--scan', '--pattern', 'completion:*') =~ /\S+/g;
        return $k if $k >= $n;
        select(undef, undef, undef, 0.05);
    }
    return $k;
}

sub wait_log {
    my ($re) = @_;
    for (1 .. 600) {
        return 1 if Helix::log_count($re);
        select(undef, undef, undef, 0.05);
    }
    return 0;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: Redis stopped: the breaker opens, answers go on from the providers without a command sent, logged once; SIGCONT: it closes and L2 stores again
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::L2
--- request eval
"POST /v1/chat/completions\n" . main::chat_body("first")
--- response_headers
X-Cache: MISS
--- response_body_filters eval
sub {
    my @r;
    my $keys = main::wait_keys(1);
    push @r, "stored: $keys";
    main::redis_stop();
    # these wait for Redis at most its timeout each, until the breaker opens
    for my $i (1 .. 10) {
        main::chat("opening $i");
        last if main::opened(main::metrics()) >= 1;
    }
    my $o = main::metrics();
    push @r, "opened " . main::opened($o);
    my @a;
    for my $i (1 .. 5) {
        my ($code, $h) = main::chat("while stopped $i");
        push @a, "$code " . ($h =~ /^X-Cache: (\S+)/mi ? $1 : '-');
    }
    my $s = main::metrics();
    push @r, "while stopped: " . join(', ', @a);
    push @r, "rejected: " . (main::rejected($s) - main::rejected($o) >= 5 ? "at least 5" : "too few");
    push @r, "closed workers: " . main::state($s, 'closed');
    main::redis_cont();
    my $c = main::wait_metrics(sub { main::state($_[0], 'closed') == 1 });
    main::wait_log(qr/answers again, L2 is back \(breaker closed\)/);
    push @r, "after SIGCONT: closed workers " . main::state($c, 'closed');
    # what the stopped Redis had in its sockets has run by now (the probe
    # was answered after it): the next key is the new answer's
    $keys = main::wait_keys(1);
    my ($code) = main::chat("after");
    push @r, "after: $code, stored " . (main::wait_keys($keys + 1) == $keys + 1 ? "yes" : "no");
    push @r, "logged: opened " . Helix::log_count(qr/redis 127.0.0.1:\d+ unreachable .*breaker open/)
        . ", closed " . Helix::log_count(qr/answers again, L2 is back \(breaker closed\)/);
    return join("\n", @r) . "\n";
}
--- response_body
stored: 1
opened 1
while stopped: 200 MISS, 200 MISS, 200 MISS, 200 MISS, 200 MISS
rejected: at least 5
closed workers: 0
after SIGCONT: closed workers 1
after: 200, stored yes
logged: opened 1, closed 1
--- timeout: 90



=== TEST 2: a new nginx (empty L1) reads from L2 what was stored after the breaker closed
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::L2
--- request eval
"POST /v1/chat/completions\n" . main::chat_body("after")
--- response_headers
X-Cache: HIT
X-Cache-Tier: L2



=== TEST 3: global limits: Redis stopped, the local bucket limits while the breaker is open; SIGCONT: Redis's bucket again
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Limits
--- more_headers
Authorization: Bearer sk-silent-0123456789abcdef0123456789abcdef
--- request eval
"POST /v1/chat/completions\n" . main::chat_body("limit")
--- response_headers
x-ratelimit-remaining-requests: 2
--- response_body_filters eval
sub {
    my @r;
    push @r, "in redis " . main::redis_cli('EXISTS', "helix:rl:{k:silent-$$}:r");
    main::redis_stop();
    my @codes;
    for my $i (1 .. 12) {
        my ($code) = main::chat("limited $i", 'Authorization: Bearer sk-silent-0123456789abcdef0123456789abcdef');
        push @codes, $code;
        last if $code == 429 && main::opened(main::metrics()) >= 1;
    }
    my $s = main::metrics();
    push @r, "while stopped: " . join(' ', @codes[0 .. 3])
        . (grep({ $_ != 429 } @codes[4 .. $#codes]) ? " and more 200s" : "");
    push @r, "opened " . main::opened($s) . ", rejected " . (main::rejected($s) > 0 ? "yes" : "no");
    main::redis_cont();
    main::wait_metrics(sub { main::state($_[0], 'closed') == 1 });
    # a fresh bucket in Redis (the stopped one ran what its sockets held);
    # the local one is empty: an answer with room comes from Redis
    main::redis_cli('DEL', "helix:rl:{k:silent-$$}:r", "helix:rl:{k:silent-$$}:t");
    my ($code, $h) = main::chat("back", 'Authorization: Bearer sk-silent-0123456789abcdef0123456789abcdef');
    push @r, "back: $code, remaining " . ($h =~ /^x-ratelimit-remaining-requests: (\d+)/mi ? $1 : '-');
    return join("\n", @r) . "\n";
}
--- response_body
in redis 1
while stopped: 200 200 200 429
opened 1, rejected yes
back: 200, remaining 2
--- timeout: 90



=== TEST 4: a Redis host name is resolved when the configuration loads: one that does not resolve fails nginx -t, naming the key
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml\ncache:\n  l2:\n    enabled: true\nredis:\n  host: no-such-host.invalid\n"
--- must_die
--- error_log
redis.host: cannot resolve "no-such-host.invalid"



=== TEST 5: redis.breaker.failures must be at least 1
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml\nredis:\n  host: 127.0.0.1\n  breaker:\n    failures: 0\n"
--- must_die
--- error_log
redis.breaker.failures: must be at least 1



=== TEST 6: database.breaker.max_backoff below backoff is refused
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml\ndatabase:\n  host: 127.0.0.1\n  breaker:\n    backoff: 5s\n    max_backoff: 1s\n"
--- must_die
--- error_log
database.breaker.max_backoff: must not be shorter than backoff (5000 ms)
