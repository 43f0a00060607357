# A PostgreSQL that stops answering (SIGSTOP: its sockets stay open,
# nothing comes back).  A query whose owner has gone keeps its deadline
# on its connection, so the slot comes back while the server is still
# silent; and after database.breaker.failures failures in a row the
# worker's breaker opens: queries fail at once (503 here) instead of
# each waiting for timeouts.database, until one new connection finds the
# server again.  A private server (util/services.sh) on a port of this
# test's own, so the suite's one is never stopped; every exit path sends
# it SIGCONT and stops it.
use Test::Nginx::Socket 'no_plan';
use Helix;
use HelixPg;

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";
our $PgPort = $Port + 11;
our $PgDir = "build/test/postgres-silent-$PgPort";
our $Tmp = "/tmp/helix-pg-silent-$$";
our @Stopped;

sub pg_start {
    system("util/services.sh start postgres $PgPort $PgDir >/dev/null 2>&1") == 0
        or die "private postgres did not start";
    system("PGPORT=$PgPort util/migrate.sh --reset >/dev/null") == 0
        or die "util/migrate.sh failed";
}

sub pg_cont { kill 'CONT', @Stopped if @Stopped; @Stopped = (); }

sub pg_stop_all { pg_cont(); system("util/services.sh stop postgres $PgDir --purge >/dev/null 2>&1"); }

# the postmaster and every process it started: stopped, not killed
sub pg_sigstop {
    my $data = -s "$PgDir/pgdata.path" ? `head -n 1 $PgDir/pgdata.path` : "$PgDir/data";
    chomp $data;
    my $pm = `head -n 1 $data/postmaster.pid`;
    chomp $pm;
    die "no postmaster" unless $pm =~ /^\d+$/;
    my @kids = grep { /^\d+$/ } map { s/\s+//gr } split /\n/, `ps -o pid= --ppid $pm`;
    @Stopped = ($pm, @kids);
    kill 'STOP', @Stopped;
}

pg_start();
system("mkdir -p $Tmp");
add_cleanup_handler(sub { pg_stop_all(); system("rm -rf $Tmp"); });
END { pg_cont(); }

our $HttpConfig = Helix::http_config();

# /page: a subrequest reads a task while another waits on a slow
# provider; the client giving up ends the whole request, and with it
# the owner of the query in flight
our $Config = Helix::config(extra => <<"_EOC_");
    location /v1/tasks { helix_endpoint tasks; }
    location = /metrics { helix_endpoint metrics; }
    location = /page {
        ssi on;
        ssi_types *;
        default_type text/plain;
        return 200 '<!--# include virtual="/slow" --><!--# include virtual="/v1/tasks/task-gone" -->';
    }
    location = /slow {
        proxy_pass http://127.0.0.1:$ENV{TEST_NGINX_OPENAI_PORT}/v1/models;
        proxy_set_header X-Mock-Latency-Ms 20000;
        proxy_read_timeout 60s;
    }
_EOC_

sub yaml {
    my ($breaker) = @_;
    return ">>> helix.yaml\n$Helix::Providers"
        . "database:\n  host: 127.0.0.1\n  port: $PgPort\n  name: helixagent\n  user: postgres\n"
        . "  pool:\n    max_open: 1\n$breaker"
        . "tasks:\n  enabled: false\ntimeouts:\n  database: 1500ms\n";
}

our $Task = '{"type": "completion", "payload": {"prompt": "silent"}}';

sub metrics { my (undef, $body) = HelixPg::curl('GET', "$Base/metrics"); return $body; }

sub val {
    my ($text, $name) = @_;
    my $re = quotemeta $name;
    return $text =~ /^$re (\S+)$/m ? $1 : 'none';
}

sub conns { return val($_[0], qq(helixagent_db_connections{state="$_[1]"})); }
sub qn { return val($_[0], qq(helixagent_db_queries_total{outcome="$_[1]"})); }
sub breaker { return val($_[0], qq(helixagent_db_breaker_state{state="$_[1]"})); }

# polls GET /metrics until $ok->($text) holds (30 s); returns the text
sub wait_metrics {
    my ($ok) = @_;
    my $t = '';
    for (1 .. 600) {
        $t = metrics();
        return $t if $t =~ /helixagent_db_connections/ && $ok->($t);
        select(undef, undef, undef, 0.05);
    }
    return $t;
}

sub wait_log {
    my ($re, $n) = @_;
    for (1 .. 600) {
        return 1 if Helix::log_count($re) >= ($n // 1);
        select(undef, undef, undef, 0.05);
    }
    return 0;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a query whose owner went away while PostgreSQL is silent still has its deadline: its connection goes, the pool serves again
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  breaker:\n    failures: 100\n")
--- request eval
"POST /v1/tasks\n$::Task"
--- error_code: 202
--- response_body_filters eval
sub {
    my @r;
    my $b = main::wait_metrics(sub { main::conns($_[0], 'idle') == 1 });
    main::pg_sigstop();
    # the client gives up after 1 s: the request, owner of the query, ends
    system("curl -s -m 1 -o /dev/null $::Base/page");
    my $m = main::wait_metrics(sub { main::conns($_[0], 'busy') == 0
                                     && main::qn($_[0], 'timeout') > main::qn($b, 'timeout') });
    push @r, "while silent: busy " . main::conns($m, 'busy')
        . ", timeout +" . (main::qn($m, 'timeout') - main::qn($b, 'timeout'));
    push @r, "owner gone: " . Helix::log_count(qr/postgresql query "helix_tasks_get" did not finish within 1500 ms, its connection is closed \(its owner had gone\)/);
    main::pg_cont();
    my $code = 0;
    for (1 .. 100) {
        ($code) = HelixPg::curl('POST', "$::Base/v1/tasks", $::Task);
        last if $code == 202;
        select(undef, undef, undef, 0.1);
    }
    push @r, "back: POST $code";
    return join("\n", @r) . "\n";
}
--- response_body
while silent: busy 0, timeout +1
owner gone: 1
back: POST 202
--- timeout: 60



=== TEST 2: a silent PostgreSQL opens the breaker: queries fail at once while it is stopped, logged once; back: the breaker closes
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  breaker:\n    failures: 2\n    backoff: 300ms\n    max_backoff: 1s\n")
--- request eval
"POST /v1/tasks\n$::Task"
--- error_code: 202
--- response_body_filters eval
sub {
    my @r;
    my $b = main::wait_metrics(sub { main::conns($_[0], 'idle') == 1 });
    push @r, "before: closed " . main::breaker($b, 'closed');
    main::pg_sigstop();
    # each of these waits at most for its timeout, until the breaker opens
    for (1 .. 10) {
        HelixPg::curl('POST', "$::Base/v1/tasks", $::Task);
        last if main::val(main::metrics(), 'helixagent_db_breaker_opened_total') >= 1;
    }
    my $o = main::metrics();
    push @r, "opened " . main::val($o, 'helixagent_db_breaker_opened_total');
    # still stopped: answered at once, none of them sent
    my $codes = '';
    for (1 .. 5) {
        my ($code, $body) = HelixPg::curl('POST', "$::Base/v1/tasks", $::Task);
        $codes .= "$code " . ($body =~ /database_unavailable/ ? "named " : "");
    }
    my $s = main::metrics();
    push @r, "while stopped: $codes";
    push @r, "rejected +" . (main::val($s, 'helixagent_db_breaker_rejected_total')
                             - main::val($o, 'helixagent_db_breaker_rejected_total') >= 5 ? ">=5" : "few");
    push @r, "not closed: " . main::breaker($s, 'closed');
    main::pg_cont();
    my $a = main::wait_metrics(sub { main::breaker($_[0], 'closed') == 1 });
    main::wait_log(qr/postgresql 127.0.0.1:\d+ answers again \(breaker closed\)/);
    my ($code) = HelixPg::curl('POST', "$::Base/v1/tasks", $::Task);
    push @r, "back: closed " . main::breaker($a, 'closed') . ", POST $code";
    push @r, "logged: opened " . Helix::log_count(qr/postgresql 127.0.0.1:\d+ unreachable .*breaker open/)
        . ", closed " . Helix::log_count(qr/answers again \(breaker closed\)/);
    return join("\n", @r) . "\n";
}
--- response_body
before: closed 1
opened 1
while stopped: 503 named 503 named 503 named 503 named 503 named 
rejected +>=5
not closed: 0
back: closed 1, POST 202
logged: opened 1, closed 1
--- timeout: 90
