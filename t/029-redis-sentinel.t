# Redis through Sentinel (redis.sentinel): three redis-sentinel, a master
# and a replica, all started here in a temporary directory on this test's
# own ports (TEST_NGINX_SERVER_PORT + 10 .. + 14).  The master is killed
# (SIGKILL) under a stream of requests: every request is answered, those
# the failover catches are answered without Redis (L2 misses, the local
# limit buckets), and L2 hits and Redis's limit buckets come back from
# the promoted replica once Sentinel says "+switch-master".  The measured
# figures go to the test's diagnostics (prove -v shows them), never into
# an assertion.  Then the old master comes back as a replica and a
# SENTINEL FAILOVER moves the master back to it: the gateway follows.
use Test::Nginx::Socket 'no_plan';
use Time::HiRes qw(time);
use Helix;

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";
our $Master = $Port + 10;
our $Replica = $Port + 11;
our @Sentinels = ($Port + 12, $Port + 13, $Port + 14);
our $Dir = "/tmp/helix-test-sentinel-$$";
our $Key = 'sk-sentinel-0123456789abcdef0123456789abcdef';

sub cli { my ($port, @args) = @_; my $a = join ' ', map { "'$_'" } @args;
    my $out = `redis-cli -p $port $a 2>&1`; chomp $out; return $out; }

sub wait_for {
    my ($ok) = @_;
    for (1 .. 1200) {
        return 1 if $ok->();
        select(undef, undef, undef, 0.05);
    }
    return 0;
}

sub redis_start {
    my ($port, @more) = @_;
    system("mkdir -p $Dir/r$port && redis-server --port $port --bind 127.0.0.1 "
        . "--save '' --appendonly no --daemonize yes --dir $Dir/r$port "
        . "--pidfile $Dir/r$port/redis.pid --logfile $Dir/r$port/redis.log @more") == 0
        or die "redis-server failed";
    wait_for(sub { cli($port, 'PING') eq 'PONG' }) or die "redis on $port did not start";
}

sub pid_of { my ($f) = @_; my $p = `cat $f 2>/dev/null`; chomp $p; return $p; }

sub sentinel_start {
    my ($port) = @_;
    my $d = "$Dir/s$port";
    system("mkdir -p $d");
    open my $fh, '>', "$d/sentinel.conf" or die;
    print $fh "port $port\nbind 127.0.0.1\ndaemonize yes\npidfile $d/sentinel.pid\n"
        . "logfile $d/sentinel.log\ndir $d\n"
        . "sentinel monitor helixm 127.0.0.1 $Master 2\n"
        . "sentinel down-after-milliseconds helixm 1000\n"
        . "sentinel failover-timeout helixm 10000\n"
        . "sentinel parallel-syncs helixm 1\n";
    close $fh;
    system("redis-sentinel $d/sentinel.conf") == 0 or die "redis-sentinel failed";
}

# what Sentinel $port says of helixm: a field of SENTINEL MASTER
sub sentinel_field {
    my ($port, $field) = @_;
    my @l = split /\n/, cli($port, 'SENTINEL', 'MASTER', 'helixm');
    for (my $i = 0; $i < @l - 1; $i += 2) { return $l[$i + 1] if $l[$i] eq $field; }
    return '';
}

sub master_port {
    my @l = split /\n/, cli($Sentinels[0], 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', 'helixm');
    return $l[1] // '';
}

# all three know each other and the replica: a failover can happen
sub sentinels_ready {
    my ($replicas) = @_;
    for my $s (@Sentinels) {
        return 0 unless sentinel_field($s, 'num-other-sentinels') eq '2'
            && sentinel_field($s, 'num-slaves') eq $replicas
            && sentinel_field($s, 'flags') eq 'master';
    }
    return 1;
}

sub stop_all {
    for my $f (glob("$Dir/*/*.pid")) {
        my $p = pid_of($f);
        kill 'KILL', $p if $p =~ /^\d+$/;
    }
    system("rm -rf $Dir");
}

redis_start($Master);
redis_start($Replica, "--replicaof 127.0.0.1 $Master");
wait_for(sub { cli($Replica, 'INFO', 'replication') =~ /master_link_status:up/ })
    or die "the replica did not sync";
sentinel_start($_) for @Sentinels;
wait_for(sub { sentinels_ready(1) }) or die "the sentinels did not find each other";

add_cleanup_handler(\&stop_all);

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => "    location = /metrics { helix_endpoint metrics; }\n");

our $Yaml = ">>> helix.yaml\n$Helix::Providers"
    . "cache:\n  l1:\n    max_size: 0\n  l2:\n    enabled: true\n"
    . "redis:\n  pool:\n    size: 2\n    timeout: 500ms\n"
    . "  breaker:\n    failures: 2\n    backoff: 200ms\n    max_backoff: 1s\n"
    . "  sentinel:\n    master_name: helixm\n    nodes:\n"
    . join('', map { "      - 127.0.0.1:$_\n" } @Sentinels)
    . "auth:\n  enabled: true\n  keys:\n    - name: sentinel-$$\n      key: $Key\n"
    . "      requests_per_minute: 1000000\n";

sub chat {
    my ($c) = @_;
    my $body = qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "$c $$"}]});
    my $out = `curl -s -m 30 -D - -o /dev/null -H 'Authorization: Bearer $Key' --data-binary '$body' $Base/v1/chat/completions`;
    my ($code) = $out =~ m{^HTTP/\S+ (\d+)};
    my ($tier) = $out =~ /^X-Cache-Tier: (\S+)/mi;
    return ($code // 0, $tier // 'none');
}

# the limit buckets as Redis at $port has them
sub buckets {
    my ($port) = @_;
    return join ',', map { cli($port, 'GET', $_) }
        sort split /\n/, cli($port, '--scan', '--pattern', 'helix:rl:*');
}

# one request after another until L2 and the limits are back on $to
# (or $max requests): what the failover cost, in requests and seconds.
# Limits are back when a request changes a bucket on $to after Sentinel
# named it master (no replication into it from then on).
sub through_failover {
    my ($to, $max, $kill) = @_;
    my (%f, @codes, $before);
    $f{start} = time;
    $kill->();
    for my $i (1 .. $max) {
        my ($code, $tier) = chat('cached');
        push @codes, $code;
        $f{requests}++;
        $f{miss}++ if $tier ne 'L2';
        if (!defined $f{switch}) {
            next unless master_port() eq $to;
            $f{switch} = time;
            $before = buckets($to);
            next;
        }
        $f{l2} //= time if $tier eq 'L2';
        if (!defined $f{limits}) {
            my $now = buckets($to);
            $f{limits} = time if $now ne $before;
        }
        last if defined $f{l2} && defined $f{limits};
    }
    $f{miss} //= 0;
    $f{non200} = grep { $_ != 200 } @codes;
    $f{codes} = join ',', grep { $_ != 200 } @codes;
    return \%f;
}

# the gateway has heard from a Sentinel where the master is
sub wait_master {
    my ($port) = @_;
    return wait_for(sub { Helix::log_count(qr/redis master "helixm" is 127\.0\.0\.1:$port \(sentinel\)/) })
        ? "yes" : "no";
}

sub figures {
    my ($name, $f) = @_;
    my $ms = sub { defined $_[0] ? sprintf('%.0f ms', 1000 * ($_[0] - $f->{start})) : 'never' };
    Test::More::diag("$name: $f->{requests} requests, $f->{miss} answered without L2, "
        . "$f->{non200} not 200 ($f->{codes}); Sentinel named the new master after " . $ms->($f->{switch})
        . ", first L2 hit after " . $ms->($f->{l2}) . ", limits in Redis after "
        . $ms->($f->{limits}));
    open my $fh, '>>', "/tmp/helix-sentinel-figures.txt";
    print $fh "$name requests=$f->{requests} without_l2=$f->{miss} non200=$f->{non200} switch="
        . $ms->($f->{switch}) . " l2=" . $ms->($f->{l2}) . " limits=" . $ms->($f->{limits}) . "\n";
    close $fh;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the master killed under load: every request answered, L2 and Redis's limits back from the promoted replica
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
GET /metrics
--- response_body_filters eval
sub {
    my @r;
    push @r, "master known: " . main::wait_master($::Master);
    # stored in L2 and copied to the replica before the master goes
    main::chat('cached');
    push @r, "replicated: " . (main::wait_for(sub {
        main::cli($::Replica, '--scan', '--pattern', 'completion:*') =~ /\S/ }) ? "yes" : "no");
    my ($code, $tier) = main::chat('cached');
    push @r, "before: $code $tier";
    my $f = main::through_failover($::Replica, 3000, sub {
        kill 'KILL', main::pid_of("$::Dir/r$::Master/redis.pid") });
    main::figures("kill -9 of the master", $f);
    push @r, "not 200: $f->{non200}";
    push @r, "L2 back: " . (defined $f->{l2} ? "yes" : "no");
    push @r, "limits back: " . (defined $f->{limits} ? "yes" : "no");
    push @r, "logged: " . Helix::log_count(qr/redis master "helixm" is 127\.0\.0\.1:$::Replica \(sentinel\), connections to the old one closed/);
    return join("\n", @r) . "\n";
}
--- response_body eval
"master known: yes\nreplicated: yes\nbefore: 200 L2\nnot 200: 0\nL2 back: yes\nlimits back: yes\nlogged: 1\n"
--- no_error_log
[alert]
--- timeout: 300



=== TEST 2: the old master back as a replica, SENTINEL FAILOVER to it: the gateway follows, nothing is lost
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
GET /metrics
--- response_body_filters eval
sub {
    my @r;
    push @r, "master known: " . main::wait_master($::Replica);
    my ($code, $tier) = main::chat('cached');
    push @r, "from the new master: $code $tier";
    main::redis_start($::Master, "--replicaof 127.0.0.1 $::Replica");
    push @r, "synced: " . (main::wait_for(sub {
        main::cli($::Master, 'INFO', 'replication') =~ /master_link_status:up/
            && main::sentinels_ready(1) }) ? "yes" : "no");
    my $f = main::through_failover($::Master, 3000, sub {
        main::cli($::Sentinels[0], 'SENTINEL', 'FAILOVER', 'helixm') });
    main::figures("SENTINEL FAILOVER", $f);
    push @r, "not 200: $f->{non200}";
    push @r, "L2 back: " . (defined $f->{l2} ? "yes" : "no");
    push @r, "limits back: " . (defined $f->{limits} ? "yes" : "no");
    push @r, "logged: " . Helix::log_count(qr/redis master "helixm" is 127\.0\.0\.1:$::Master \(sentinel\), connections to the old one closed/);
    return join("\n", @r) . "\n";
}
--- response_body eval
"master known: yes\nfrom the new master: 200 L2\nsynced: yes\nnot 200: 0\nL2 back: yes\nlimits back: yes\nlogged: 1\n"
--- no_error_log
[alert]
--- timeout: 300



=== TEST 3: master_name without nodes, nodes without master_name, a bad node: nginx -t names the key
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
redis:
  sentinel:
    nodes: ["127.0.0.1:1:2"]
--- must_die
--- error_log
helix.yaml:3: redis.sentinel.nodes[0]: invalid server "127.0.0.1:1:2"



=== TEST 4: nodes without master_name
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
redis:
  sentinel:
    nodes: [127.0.0.1]
--- must_die
--- error_log
redis.sentinel.master_name: is required with redis.sentinel.nodes



=== TEST 5: master_name without nodes
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
redis:
  sentinel:
    master_name: helixm
--- must_die
--- error_log
redis.sentinel.nodes: is required with master_name
