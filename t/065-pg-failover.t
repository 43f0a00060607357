# PostgreSQL failover with libpq's own multi-host connection strings
# (database.hosts, target_session_attrs read-write): a primary and a
# streaming standby (pg_basebackup -R, synchronous replication, so that
# a committed task is on the standby too), started here in a temporary
# directory on this test's own ports (TEST_NGINX_SERVER_PORT + 15, + 16).
# Tasks and chat requests (the completion log) flow; the primary is
# stopped (immediate: a crash) and the standby promoted; the pool finds
# the new primary by itself.  Every task answered 202 completes, once;
# every completion log row is counted written or dropped.  The figures
# go to the test's diagnostics.
use Test::Nginx::Socket 'no_plan';
use Time::HiRes qw(time);
use Helix;

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";
our $PgA = $Port + 15;
our $PgB = $Port + 16;
our $Dir = "/tmp/helix-test-pgfail-$$";
our ($PgBin) = reverse sort glob('/usr/lib/postgresql/*/bin');

sub as_pg { my ($cmd) = @_; return system("cd / && runuser -u postgres -- $cmd >>$Dir/cmd.log 2>&1"); }

sub psql {
    my ($port, $sql) = @_;
    $sql =~ s/'/'\\''/g;
    my $out = `PGCONNECT_TIMEOUT=5 psql -X -q -tA -h 127.0.0.1 -p $port -U postgres -d helixagent -c '$sql' 2>&1`;
    chomp $out;
    return $out;
}

sub wait_for {
    my ($ok) = @_;
    for (1 .. 1200) {
        return 1 if $ok->();
        select(undef, undef, undef, 0.05);
    }
    return 0;
}

sub pg_up { my ($port) = @_;
    return system("$PgBin/pg_isready -q -h 127.0.0.1 -p $port") == 0; }

sub stop_all {
    for my $d ("$Dir/a", "$Dir/b") {
        as_pg("$PgBin/pg_ctl -D $d -m immediate stop") if -e "$d/postmaster.pid";
    }
    system("rm -rf $Dir");
}
add_cleanup_handler(\&stop_all);
END { stop_all() if -d $Dir; }

system("mkdir -p $Dir && chmod 755 $Dir && chown postgres: $Dir") == 0 or die;
as_pg("$PgBin/initdb -D $Dir/a -U postgres --auth=trust -N -E UTF8 --no-locale") == 0
    or die "initdb failed";
open my $fh, '>>', "$Dir/a/postgresql.conf" or die;
print $fh "listen_addresses = '127.0.0.1'\nunix_socket_directories = '$Dir'\n"
    . "wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
    . "synchronous_commit = on\nfsync = off\n";
close $fh;
as_pg("$PgBin/pg_ctl -D $Dir/a -l $Dir/a.log -o '-p $PgA' -w start") == 0 or die "primary did not start";
system("PGCONNECT_TIMEOUT=5 psql -X -q -h 127.0.0.1 -p $PgA -U postgres -d postgres -c 'create database helixagent'") == 0
    or die "createdb failed";
system("PGPORT=$PgA util/migrate.sh >/dev/null") == 0 or die "migrate failed";
as_pg("$PgBin/pg_basebackup -h 127.0.0.1 -p $PgA -U postgres -D $Dir/b -R -X stream") == 0
    or die "pg_basebackup failed";
as_pg("$PgBin/pg_ctl -D $Dir/b -l $Dir/b.log -o '-p $PgB' -w start") == 0 or die "standby did not start";
# synchronous from now on (not before: commits would wait for no one),
# and on the primary only (the promoted standby has no standby to wait for)
psql($PgA, "ALTER SYSTEM SET synchronous_standby_names = '*'");
psql($PgA, "SELECT pg_reload_conf()");
wait_for(sub { psql($PgA, "SELECT sync_state FROM pg_stat_replication") eq 'sync' })
    or die "the standby is not in sync";


our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<"_EOC_");
    location /v1/tasks { helix_endpoint tasks; }
    location = /metrics { helix_endpoint metrics; }
_EOC_

our $Yaml = ">>> helix.yaml\n$Helix::Providers"
    . "database:\n  hosts: [\"127.0.0.1:$PgA\", \"127.0.0.1:$PgB\"]\n"
    . "  name: helixagent\n  user: postgres\n"
    . "  breaker:\n    failures: 1\n    backoff: 100ms\n    max_backoff: 500ms\n"
    . "  completion_log:\n    flush_interval: 50ms\n"
    . "tasks:\n  poll_interval: 200ms\n";

sub post_task {
    my ($prompt) = @_;
    my $out = `curl -s -m 30 -w '\\n%{http_code}' --data-binary '{"type": "completion", "payload": {"prompt": "$prompt", "model": "gpt-4o"}}' $Base/v1/tasks`;
    my ($body, $code) = $out =~ /^(.*)\n(\d+)$/s;
    my ($id) = ($body // '') =~ /"task_id":"([^"]+)"/;
    return ($code // 0, $id);
}

sub chat {
    my ($c) = @_;
    my $out = `curl -s -m 30 -o /dev/null -w '%{http_code}' --data-binary '{"model": "gpt-4o", "messages": [{"role": "user", "content": "$c $$"}]}' $Base/v1/chat/completions`;
    return $out;
}

sub metric {
    my ($name) = @_;
    my $t = `curl -s -m 30 $Base/metrics`;
    my $re = quotemeta $name;
    return $t =~ /^$re (\S+)$/m ? $1 : 0;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the primary crashes and the standby is promoted while tasks and the completion log flow: every accepted task completes once, every row is counted
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
GET /metrics
--- response_body_filters eval
sub {
    my (@r, @accepted, %codes, $chats, $t_kill, $t_prom, $t_back);
    my $rows0 = main::metric('helixagent_completion_log_rows_total{outcome="written"}');
    for my $i (1 .. 60) {
        if ($i == 20) {
            $t_kill = time;
            main::as_pg("$::PgBin/pg_ctl -D $::Dir/a -m immediate stop");
        }
        if ($i == 25) {
            main::as_pg("$::PgBin/pg_ctl -D $::Dir/b -w promote");
            $t_prom = time;
        }
        my ($code, $id) = main::post_task("failover $i $$");
        $codes{$code}++;
        push @accepted, $id if $code == 202;
        $t_back //= time if $i >= 25 && $code == 202;
        $chats++ if main::chat("log $i") == 200;
    }
    Test::More::diag(sprintf("tasks: %s; promoted %.0f ms after the crash (5 requests later), "
        . "the first task accepted by the new primary %.0f ms after the promotion",
        join(', ', map { "$codes{$_} x $_" } sort keys %codes),
        1000 * ($t_prom - $t_kill), 1000 * ($t_back - $t_prom)));
    my $ids = join ',', map { "'$_'" } @accepted;
    my $done = '';
    main::wait_for(sub {
        $done = main::psql($::PgB, "SELECT count(*) FROM background_tasks WHERE id IN ($ids) AND status = 'completed'");
        $done == @accepted });
    push @r, "accepted tasks completed: " . ($done == @accepted ? "all" : "$done of " . scalar @accepted);
    my $once = grep { Helix::log_count(qr/task \Q$_\E completed/) == 1 } @accepted;
    push @r, "logged completed exactly once: " . ($once == @accepted ? "all" : "$once of " . scalar @accepted);
    # every row of the 60 chats counted: written or dropped
    my ($w, $d) = (0, 0);
    main::wait_for(sub {
        $w = main::metric('helixagent_completion_log_rows_total{outcome="written"}') - $rows0;
        $d = main::metric('helixagent_completion_log_rows_total{outcome="dropped"}');
        $w + $d >= $chats });
    my $in_b = main::psql($::PgB, "SELECT count(*) FROM completions");
    Test::More::diag("completion log: $chats chats answered, rows written $w, dropped $d, "
        . "rows in the new primary $in_b (tasks' own calls included)");
    push @r, "rows counted: " . ($w + $d >= $chats ? "all" : "written $w dropped $d of $chats");
    push @r, "pool reconnected: " . (Helix::log_count(qr/postgresql 127\.0\.0\.1:$::PgA,127\.0\.0\.1:$::PgB answers again/) >= 1 ? "yes" : "no");
    return join("\n", @r) . "\n";
}
--- response_body
accepted tasks completed: all
logged completed exactly once: all
rows counted: all
pool reconnected: yes
--- no_error_log
[alert]
--- timeout: 300
