# The PostgreSQL pool (database.pool, database.query, timeouts.database)
# against the suite's server: the queries are those of POST /v1/tasks
# (the task runner is off here).  A table lock taken by psql holds the
# queries in the server, so that the pool's limits can be watched in
# pg_stat_activity.
use Test::Nginx::Socket 'no_plan';
use Helix;
use HelixPg;

HelixPg::reset();

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";
our $Tmp = "/tmp/helix-pg-pool-$$";
system("mkdir -p $Tmp");
add_cleanup_handler(sub { system("rm -rf $Tmp") });

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => "    location /v1/tasks { helix_endpoint tasks; }\n");

sub yaml {
    my ($db, $more) = @_;
    return ">>> helix.yaml\n$Helix::Providers" . HelixPg::yaml($db)
        . "tasks:\n  enabled: false\n" . ($more // '');
}

our $Task = '{"type": "completion", "payload": {"prompt": "pool"}}';

# psql holds the tasks table for $secs, in the background
sub lock_table {
    my ($secs) = @_;
    system("PGOPTIONS='-c client_min_messages=warning' psql -X -q -h 127.0.0.1 -p $HelixPg::Port -U postgres -d helixagent "
        . "-c 'BEGIN; LOCK TABLE background_tasks IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep($secs); COMMIT;' >/dev/null 2>&1 &");
    HelixPg::wait_sql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        . "WHERE c.relname = 'background_tasks' AND l.mode = 'AccessExclusiveLock' AND l.granted", qr/^1$/);
}

# $n POSTs at once in the background; their statuses land in $Tmp/codes
sub burst {
    my ($n) = @_;
    unlink "$Tmp/codes";
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

sub wait_log {
    my ($re) = @_;
    for (1 .. 400) {
        open my $fh, '<', "$ENV{TEST_NGINX_SERVER_ROOT}/logs/error.log" or return 0;
        local $/;
        return 1 if <$fh> =~ $re;
        select(undef, undef, undef, 0.05);
    }
    return 0;
}

# the server's log (util/services.sh may keep it outside build/test)
sub pg_log { return "$HelixPg::Dir/postgres.log"; }

our $LogAt;

sub helix_backends {
    my ($where) = @_;
    return HelixPg::psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'helix'" . ($where // ''));
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: under concurrent load the pool stays at max_open; the waiting requests are served after; max_idle is kept
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  pool:\n    max_open: 3\n    max_idle: 1\n")
--- request eval
["GET /v1/models"]
--- response_body_filters eval
sub {
    main::lock_table(2);
    main::burst(12);
    # all three blocked in the server, the rest waiting in the pool
    my $blocked = HelixPg::wait_sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'helix' AND wait_event_type = 'Lock'", qr/^3$/);
    my $max = 0;
    for (1 .. 10) { my $n = main::helix_backends(); $max = $n if $n > $max; select(undef, undef, undef, 0.05); }
    my $codes = main::codes(12);
    my $rows = HelixPg::psql("SELECT count(*) FROM background_tasks");
    my $idle = HelixPg::wait_sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'helix'", qr/^1$/);
    return "blocked $blocked, at most $max open, $codes, rows $rows, idle after $idle";
}
--- response_body: blocked 3, at most 3 open, 202x12, rows 12, idle after 1



=== TEST 2: a statement over slow_query_threshold is logged with its time
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  query:\n    slow_query_log: true\n    slow_query_threshold: 300ms\n")
--- request eval
["GET /v1/models", "POST /v1/tasks\n$::Task"]
--- error_code eval: [200, 202]
--- response_body_filters eval
Helix::per_request([sub { main::lock_table(1); "" }, sub { "" }])
--- response_body eval
["", ""]
--- error_log eval
[qr/slow query "helix_tasks_insert" took \d{3,} ms \(threshold 300 ms\): WITH t AS \(INSERT INTO background_tasks/]



=== TEST 3: fast statements are not logged as slow
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  query:\n    slow_query_threshold: 5s\n")
--- request eval
["POST /v1/tasks\n$::Task", "POST /v1/tasks\n$::Task"]
--- error_code eval: [202, 202]
--- no_error_log
slow query



=== TEST 4: a statement over timeouts.database is a 503, a waiting one too, and nothing is written behind the client's back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  pool:\n    max_open: 1\n", "timeouts:\n  database: 1s\n")
--- request eval
["GET /v1/models"]
--- response_body_filters eval
sub {
    my $before = HelixPg::psql("SELECT count(*) FROM background_tasks");
    main::lock_table(2.5);
    main::burst(2);
    my $codes = main::codes(2);
    # the lock is gone: whatever the server kept would be visible now
    HelixPg::wait_sql("SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'background_tasks' AND l.mode = 'AccessExclusiveLock'", qr/^0$/);
    my $after = HelixPg::psql("SELECT count(*) FROM background_tasks");
    my ($code) = HelixPg::curl('POST', "$::Base/v1/tasks", $::Task);
    return "$codes, rows " . ($after - $before) . ", then $code";
}
--- response_body: 503x2, rows 0, then 202
--- error_log eval
[qr/postgresql query "helix_tasks_insert" did not finish within 1000 ms|canceling statement due to statement timeout/]



=== TEST 5: PostgreSQL restarted mid-run: the pool drops the dead connections and serves again, no reload
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /v1/tasks\n$::Task", "POST /v1/tasks\n$::Task"]
--- error_code eval: [202, 202]
--- response_body_filters eval
Helix::per_request([sub { HelixPg::stop(); HelixPg::start(); "" }, sub { "" }])
--- response_body eval
["", ""]
--- error_log eval
[qr/postgresql connection lost/]



=== TEST 6: max_idle_time closes an idle connection
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  pool:\n    max_idle_time: 300ms\n")
--- request eval
["POST /v1/tasks\n$::Task"]
--- error_code: 202
--- response_body_filters eval
sub { main::wait_log(qr/idle postgresql connection closed after 300 ms/); HelixPg::wait_sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'helix'", qr/^0$/) }
--- response_body: 0



=== TEST 7: max_lifetime: a connection older than that is closed when it is given back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  pool:\n    max_lifetime: 200ms\n")
--- request eval
["GET /v1/models", "POST /v1/tasks\n$::Task"]
--- error_code eval: [200, 202]
--- response_body_filters eval
Helix::per_request([sub { main::lock_table(0.5); "" }, sub { "" }])
--- response_body eval
["", ""]
--- error_log eval
[qr/postgresql connection closed after its max_lifetime of 200 ms/]



=== TEST 8: statements are prepared once per connection, then only executed
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  pool:\n    max_open: 1\n")
--- request eval
["GET /v1/models", "POST /v1/tasks\n$::Task", "POST /v1/tasks\n$::Task", "POST /v1/tasks\n$::Task", "GET /v1/models"]
--- error_code eval: [200, 202, 202, 202, 200]
--- response_body_filters eval
Helix::per_request([sub { HelixPg::psql("ALTER DATABASE helixagent SET log_min_duration_statement = 0"); $::LogAt = -s main::pg_log() // 0; "" },
 sub { "" }, sub { "" }, sub { "" },
 sub { HelixPg::psql("ALTER DATABASE helixagent RESET log_min_duration_statement");
       open my $fh, '<', main::pg_log() or return "no log"; seek $fh, $::LogAt, 0; local $/; my $l = <$fh>;
       my $parse = () = $l =~ /parse helix_tasks_insert:/g; my $exec = () = $l =~ /execute helix_tasks_insert:/g;
       "parse $parse execute $exec" }])
--- response_body eval
["", "", "", "", "parse 1 execute 3"]
