# Metrics of the storage layer on GET /metrics: the PostgreSQL pools'
# connections by state (summed over live workers), queries by outcome
# and their times, waits for a full pool, background tasks and their
# callbacks by outcome.  Every check waits for the counters to move (or
# for the state it needs: a lock held, a backend stopped), then compares
# what moved with what the requests did; no timing is asserted.
use Test::Nginx::Socket 'no_plan';
use Helix;
use HelixPg;

HelixPg::reset();

# one pool: the arithmetic of max_open and waits is exact; a master, so
# that a killed worker is replaced
master_on();
workers(1);

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";
our $Tmp = "/tmp/helix-db-metrics-$$";
system("mkdir -p $Tmp");
add_cleanup_handler(sub { system("rm -rf $Tmp") });

# PostgreSQL processes a test stopped (SIGSTOP): never left stopped
our @Stopped;
add_cleanup_handler(sub { kill 'CONT', @Stopped if @Stopped; });

our $HttpConfig = Helix::http_config(extra => <<'_EOC_');
    log_format helix_cb '$request_body';
_EOC_

our $Config = Helix::config(extra => <<"_EOC_");
    location /v1/tasks { helix_endpoint tasks; }
    location = /metrics { helix_endpoint metrics; }
    location = /callback {
        access_log logs/callback.log helix_cb;
        client_body_buffer_size 64k;
        proxy_method GET;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_pass http://127.0.0.1:$ENV{TEST_NGINX_OPENAI_PORT}/v1/models;
    }
_EOC_

our $Task = '{"type": "completion", "payload": {"prompt": "metrics"}}';

# $db: more of the database block; $rest: the tasks block and others
sub yaml {
    my ($db, $rest) = @_;
    return ">>> helix.yaml\n$Helix::Providers" . HelixPg::yaml($db)
        . ($rest // "tasks:\n  enabled: false\n");
}

sub metrics { my (undef, $body) = HelixPg::curl('GET', "$Base/metrics"); return $body; }

# the value of one sample, e.g. val($text, 'helixagent_db_queries_total{outcome="ok"}')
sub val {
    my ($text, $name) = @_;
    my $re = quotemeta $name;
    return $text =~ /^$re (\S+)$/m ? $1 : 'none';
}

sub qn { return val($_[0], qq(helixagent_db_queries_total{outcome="$_[1]"})); }
sub conns { return val($_[0], qq(helixagent_db_connections{state="$_[1]"})); }
sub waiting { return val($_[0], 'helixagent_db_pool_waiting'); }
sub waits { return val($_[0], qq(helixagent_db_pool_waits_total{outcome="$_[1]"})); }
sub tasks { return val($_[0], qq(helixagent_tasks_total{outcome="$_[1]"})); }
sub cbs { return val($_[0], qq(helixagent_task_callbacks_total{outcome="$_[1]"})); }
sub open_conns { my $t = shift; return conns($t, 'busy') + conns($t, 'idle') + conns($t, 'connecting'); }

# polls GET /metrics until $ok->($text) holds (20 s); returns the text
sub wait_metrics {
    my ($ok) = @_;
    my $t = '';
    for (1 .. 400) {
        $t = metrics();
        return $t if $t =~ /helixagent_db_connections/ && $ok->($t);
        select(undef, undef, undef, 0.05);
    }
    return $t;
}

# a POST /v1/tasks in the background; its status lands in $Tmp/codes
sub post_bg {
    my ($n) = @_;
    system("for i in \$(seq $n); do curl -s -m 30 -o /dev/null -w '%{http_code}\\n' "
        . "--data-binary '$Task' $Base/v1/tasks >> $Tmp/codes & done; wait >/dev/null 2>&1 &");
}

sub codes {
    my ($n) = @_;
    for (1 .. 600) {
        if (open my $fh, '<', "$Tmp/codes") {
            my @c = <$fh>;
            if (@c >= $n) { chomp @c; my %h; $h{$_}++ for @c; return join ' ', map { "${_}x$h{$_}" } sort keys %h; }
        }
        select(undef, undef, undef, 0.05);
    }
    return 'curl never finished';
}

sub promtool {
    my ($body) = @_;
    open my $fh, '|-', "promtool check metrics > $Tmp/promtool.out 2>&1"
        or return "no promtool: $!";
    print $fh $body;
    close $fh;
    my $rc = $?;
    open my $in, '<', "$Tmp/promtool.out";
    my $out = do { local $/; <$in> } // '';
    return $rc == 0 ? "promtool: ok" : "promtool failed: $out";
}

# the table held by psql until its backend is cancelled
sub lock_table {
    system("PGOPTIONS='-c client_min_messages=warning' psql -X -q -h 127.0.0.1 -p $HelixPg::Port -U postgres -d helixagent "
        . "-c 'BEGIN; LOCK TABLE background_tasks IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT;' >/dev/null 2>&1 &");
    HelixPg::wait_sql(lock_sql('count(*)'), qr/^1$/);
}

sub unlock_table { HelixPg::psql(lock_sql('pg_cancel_backend(l.pid)')); }

sub lock_sql {
    return "SELECT $_[0] FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        . "WHERE c.relname = 'background_tasks' AND l.mode = 'AccessExclusiveLock' AND l.granted";
}

# tasks the runner is off for stay pending: gone before the next nginx
sub clean { HelixPg::psql("DELETE FROM background_tasks WHERE status = 'pending'"); }

our $Before;

no_shuffle();
run_tests();

__DATA__

=== TEST 1: queries: ok counted, their times and waits observed, the connection shown idle, max_open shown
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  pool:\n    max_open: 3\n")
--- request eval
["GET /v1/models"]
--- response_body_filters eval
sub {
    my $b = main::metrics();
    my ($c1, $body) = HelixPg::curl('POST', "$::Base/v1/tasks", $::Task);
    my ($id) = $body =~ /"task_id":"([^"]+)"/;
    my ($c2) = HelixPg::curl('GET', "$::Base/v1/tasks/$id");
    main::clean();
    my $a = main::wait_metrics(sub { main::qn($_[0], 'ok') >= main::qn($b, 'ok') + 2 });
    my $d = sub { my ($name) = @_; main::val($a, $name) - (main::val($b, $name) eq 'none' ? 0 : main::val($b, $name)) };
    return join "\n", "POST $c1 GET $c2",
        "ok +" . (main::qn($a, 'ok') - main::qn($b, 'ok')),
        "error +" . (main::qn($a, 'error') - main::qn($b, 'error')),
        "timeout +" . (main::qn($a, 'timeout') - main::qn($b, 'timeout')),
        "query times +" . $d->('helixagent_db_query_duration_seconds_count'),
        "pool waits timed +" . $d->('helixagent_db_pool_wait_seconds_count'),
        "full pool waits +" . (main::waits($a, 'served') - main::waits($b, 'served')),
        "submitted +" . (main::tasks($a, 'submitted') - main::tasks($b, 'submitted')),
        "busy " . main::conns($a, 'busy') . " idle " . main::conns($a, 'idle')
            . " connecting " . main::conns($a, 'connecting') . " waiting " . main::waiting($a),
        "max_open " . main::val($a, 'helixagent_db_pool_max_open'),
        ($a =~ /^helixagent_db_query_duration_seconds_bucket\{le="\+Inf"\} \d+$/m ? "histogram ok" : "no histogram"),
        main::promtool($a) . "\n";
}
--- response_body
POST 202 GET 200
ok +2
error +0
timeout +0
query times +2
pool waits timed +2
full pool waits +0
submitted +1
busy 0 idle 1 connecting 0 waiting 0
max_open 3
histogram ok
promtool: ok



=== TEST 2: PostgreSQL stopped: the connections gauge drops to 0, the failed query is an error; back: ok again
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /v1/tasks\n$::Task"]
--- error_code: 202
--- response_body_filters eval
sub {
    my @r;
    my $b = main::wait_metrics(sub { main::conns($_[0], 'idle') == 1 });
    push @r, "before: open " . main::open_conns($b);
    HelixPg::stop();
    my $s = main::wait_metrics(sub { main::open_conns($_[0]) == 0 });
    push @r, "stopped: open " . main::open_conns($s);
    my ($code) = HelixPg::curl('POST', "$::Base/v1/tasks", $::Task);
    push @r, "POST $code";
    my $e = main::wait_metrics(sub { main::qn($_[0], 'error') > main::qn($b, 'error') });
    push @r, "error counted: " . (main::qn($e, 'error') > main::qn($b, 'error') ? "yes" : "no")
        . ", ok +" . (main::qn($e, 'ok') - main::qn($b, 'ok'));
    HelixPg::start();
    for (1 .. 200) {
        ($code) = HelixPg::curl('POST', "$::Base/v1/tasks", $::Task);
        last if $code == 202;
        select(undef, undef, undef, 0.1);
    }
    my $a = main::wait_metrics(sub { main::qn($_[0], 'ok') > main::qn($e, 'ok') });
    push @r, "back: POST $code, ok +" . (main::qn($a, 'ok') - main::qn($e, 'ok'))
        . ", open " . main::open_conns($a);
    main::clean();
    return join("\n", @r) . "\n";
}
--- response_body
before: open 1
stopped: open 0
POST 503
error counted: yes, ok +0
back: POST 202, ok +1, open 1
--- ignore_alerts



=== TEST 3: a server that does not answer: the query times out and its connection goes; the query waiting for the full pool times out too
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  pool:\n    max_open: 1\n", "tasks:\n  enabled: false\ntimeouts:\n  database: 3s\n")
--- request eval
["POST /v1/tasks\n$::Task"]
--- error_code: 202
--- response_body_filters eval
sub {
    my @r;
    my $b = main::wait_metrics(sub { main::conns($_[0], 'idle') == 1 });
    # the backend of the one connection, and the postmaster: stopped, so
    # the query hangs and no new connection can take the waiting one
    my $backend = HelixPg::psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'helix'");
    return "no backend: $backend" unless $backend =~ /^\d+$/;
    my $postmaster = `ps -o ppid= -p $backend`;
    $postmaster =~ s/\s+//g;
    @::Stopped = ($postmaster, $backend);
    kill 'STOP', $backend, $postmaster;
    unlink "$::Tmp/codes";
    main::post_bg(1);
    my $m = main::wait_metrics(sub { main::conns($_[0], 'busy') == 1 });
    push @r, "first: busy " . main::conns($m, 'busy');
    main::post_bg(1);
    $m = main::wait_metrics(sub { main::waiting($_[0]) == 1 });
    push @r, "second: waiting " . main::waiting($m);
    push @r, main::codes(2);
    my $a = main::wait_metrics(sub { main::qn($_[0], 'timeout') >= main::qn($b, 'timeout') + 2 });
    kill 'CONT', $postmaster, $backend;
    @::Stopped = ();
    push @r, "timeout +" . (main::qn($a, 'timeout') - main::qn($b, 'timeout'))
        . ", error +" . (main::qn($a, 'error') - main::qn($b, 'error'))
        . ", ok +" . (main::qn($a, 'ok') - main::qn($b, 'ok'));
    push @r, "full pool waits: timeout +" . (main::waits($a, 'timeout') - main::waits($b, 'timeout'))
        . ", served +" . (main::waits($a, 'served') - main::waits($b, 'served'));
    push @r, "busy " . main::conns($a, 'busy') . ", waiting " . main::waiting($a);
    main::clean();
    return join("\n", @r) . "\n";
}
--- response_body
first: busy 1
second: waiting 1
503x2
timeout +2, error +0, ok +0
full pool waits: timeout +1, served +0
busy 0, waiting 0
--- error_log eval
[qr/postgresql query "helix_tasks_insert" did not finish within 3000 ms/,
 qr/no postgresql connection for "helix_tasks_insert" within 3000 ms \(\d+ open, max_open 1\)/]
--- ignore_alerts



=== TEST 4: pool exhaustion under concurrent load: busy at max_open, the rest waiting, each counted as a full-pool wait when served
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  pool:\n    max_open: 2\n")
--- request eval
["GET /v1/models"]
--- response_body_filters eval
sub {
    my @r;
    my $b = main::metrics();
    main::lock_table();
    unlink "$::Tmp/codes";
    main::post_bg(6);
    my $m = main::wait_metrics(sub { main::conns($_[0], 'busy') == 2 && main::waiting($_[0]) == 4 });
    push @r, "held: busy " . main::conns($m, 'busy') . ", waiting " . main::waiting($m)
        . ", max_open " . main::val($m, 'helixagent_db_pool_max_open');
    main::unlock_table();
    push @r, main::codes(6);
    my $a = main::wait_metrics(sub { main::qn($_[0], 'ok') >= main::qn($b, 'ok') + 6 });
    push @r, "ok +" . (main::qn($a, 'ok') - main::qn($b, 'ok'));
    push @r, "full pool waits: served +" . (main::waits($a, 'served') - main::waits($b, 'served'))
        . ", timeout +" . (main::waits($a, 'timeout') - main::waits($b, 'timeout'));
    push @r, "pool waits timed: " . main::val($a, 'helixagent_db_pool_wait_seconds_count');
    push @r, "after: busy " . main::conns($a, 'busy') . ", idle " . main::conns($a, 'idle')
        . ", waiting " . main::waiting($a);
    main::clean();
    return join("\n", @r) . "\n";
}
--- response_body
held: busy 2, waiting 4, max_open 2
202x6
ok +6
full pool waits: served +4, timeout +0
pool waits timed: 6
after: busy 0, idle 2, waiting 0



=== TEST 5: a task's lifecycle: submitted, completed, its callback retried once then delivered
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("", "tasks:\n  poll_interval: 300ms\n  callback_backoff: 100ms\n  callback_allow: [127.0.0.0/8]\n")
--- request eval
["POST /mock/reset", "POST /mock/openai/faults\n" . '{"route": "GET /v1/models", "status": 503, "count": 1}',
 "POST /v1/tasks\n" . qq({"type": "completion", "payload": {"prompt": "metrics lifecycle", "callback_url": "$::Base/callback"}})]
--- error_code eval: [200, 200, 202]
--- response_body_filters eval
Helix::per_request([sub { $::Before = main::metrics(); "" }, sub { "" }, sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/;
    my $b = $::Before;
    my $a = main::wait_metrics(sub { main::cbs($_[0], 'delivered') > main::cbs($b, 'delivered') });
    my $row = HelixPg::psql("SELECT status, callback_status, callback_attempts FROM background_tasks WHERE id = '$id'");
    return join "\n", "row $row",
        join(', ', map { "$_ +" . (main::tasks($a, $_) - main::tasks($b, $_)) } qw(submitted completed failed cancelled retried)),
        "callbacks: " . join(', ', map { "$_ +" . (main::cbs($a, $_) - main::cbs($b, $_)) } qw(delivered failed retried));
}])
--- response_body eval
["", "", "row completed|delivered|2\nsubmitted +1, completed +1, failed +0, cancelled +0, retried +0\ncallbacks: delivered +1, failed +0, retried +1"]



=== TEST 6: a task whose provider keeps failing: retried, then failed at max_attempts; a callback given up is counted failed
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("", "tasks:\n  poll_interval: 300ms\n  max_attempts: 2\n  callback_backoff: 100ms\n  callback_retries: 1\n  callback_allow: [127.0.0.0/8]\n")
--- request eval
["POST /mock/reset", "POST /mock/openai/faults\n" . '{"status": 500, "count": 1000}',
 "POST /v1/tasks\n" . qq({"type": "completion", "payload": {"prompt": "metrics failing", "model": "gpt-4o", "callback_url": "$::Base/callback"}}),
 "POST /mock/reset"]
--- error_code eval: [200, 200, 202, 200]
--- response_body_filters eval
Helix::per_request([sub { $::Before = main::metrics(); "" }, sub { "" }, sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/;
    my $b = $::Before;
    my $a = main::wait_metrics(sub { main::cbs($_[0], 'failed') > main::cbs($b, 'failed') });
    my $row = HelixPg::psql("SELECT status, attempts, callback_status FROM background_tasks WHERE id = '$id'");
    return join "\n", "row $row",
        join(', ', map { "$_ +" . (main::tasks($a, $_) - main::tasks($b, $_)) } qw(submitted completed failed cancelled retried)),
        "callbacks: " . join(', ', map { "$_ +" . (main::cbs($a, $_) - main::cbs($b, $_)) } qw(delivered failed retried));
}, sub { "" }])
--- response_body eval
["", "", "row failed|2|failed\nsubmitted +1, completed +0, failed +1, cancelled +0, retried +1\ncallbacks: delivered +0, failed +1, retried +1", ""]
--- ignore_alerts



=== TEST 7: DELETE of a pending task counts it cancelled, once
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /v1/tasks\n$::Task"]
--- error_code: 202
--- response_body_filters eval
sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/;
    my ($c1) = HelixPg::curl('DELETE', "$::Base/v1/tasks/$id");
    my ($c2) = HelixPg::curl('DELETE', "$::Base/v1/tasks/$id");
    my $a = main::metrics();
    main::clean();
    return "DELETE $c1 then $c2, submitted " . main::tasks($a, 'submitted') . ", cancelled " . main::tasks($a, 'cancelled');
}
--- response_body: DELETE 200 then 409, submitted 1, cancelled 1



=== TEST 8: two workers: the gauge sums both pools; a killed worker's connections are not counted after it
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("", "tasks:\n  poll_interval: 200ms\n")
--- workers: 2
--- request eval
["GET /v1/models"]
--- response_body_filters eval
sub {
    # each worker's task runner keeps one pool connection (its LISTEN
    # connection is not in the pool)
    my $pg = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'helix' AND query NOT LIKE 'LISTEN%'";
    my $m = main::wait_metrics(sub { main::open_conns($_[0]) == 2 && HelixPg::psql($pg) == 2 });
    my @r = ("two workers: " . main::open_conns($m) . " in the metrics, " . HelixPg::psql($pg) . " in PostgreSQL");
    open my $fh, '<', "$ENV{TEST_NGINX_SERVER_ROOT}/logs/nginx.pid" or return "no pid";
    my $master = <$fh>;
    chomp $master;
    my ($victim) = `pgrep -P $master` =~ /(\d+)/ or return "no worker of $master";
    kill 'KILL', $victim;
    # the next worker opens its own; the dead one's must not stay counted
    $m = main::wait_metrics(sub { kill(0, $victim) == 0 && main::open_conns($_[0]) == 2 && HelixPg::psql($pg) == 2 });
    push @r, "after the kill: " . main::open_conns($m) . " in the metrics, " . HelixPg::psql($pg) . " in PostgreSQL";
    main::clean();
    return join("\n", @r) . "\n";
}
--- response_body
two workers: 2 in the metrics, 2 in PostgreSQL
after the kill: 2 in the metrics, 2 in PostgreSQL
--- ignore_alerts
