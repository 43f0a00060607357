# Background tasks when workers and nodes come and go: a task whose worker
# was killed mid-run is taken up again after its lease and completes
# once; two nginx instances on one database run each task exactly once.
use Test::Nginx::Socket 'no_plan';
use Helix;
use HelixPg;

master_on();
workers(2);

HelixPg::reset();

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(cache => 0, extra => <<"_EOC_");
    location /v1/tasks { helix_endpoint tasks; }
    location = /callback {
        proxy_method GET;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_pass http://127.0.0.1:$ENV{TEST_NGINX_OPENAI_PORT}/v1/models;
    }
_EOC_

sub yaml {
    my ($tasks) = @_;
    return ">>> helix.yaml\n$Helix::Providers" . HelixPg::yaml()
        . "tasks:\n  poll_interval: 300ms\n  callback_allow: [127.0.0.0/8]\n"
        . ($tasks // '');
}

sub error_log {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    return <$fh>;
}

sub wait_log {
    my ($re) = @_;
    for (1 .. 400) {
        return 1 if error_log("$ENV{TEST_NGINX_SERVER_ROOT}/logs/error.log") =~ $re;
        select(undef, undef, undef, 0.05);
    }
    return 0;
}

sub mock_inflight {
    for (1 .. 400) {
        my $st = `curl -s http://127.0.0.1:$ENV{TEST_NGINX_OPENAI_PORT}/_mock/stats`;
        return 1 if $st =~ /"inflight":\s*[1-9]/;
        select(undef, undef, undef, 0.05);
    }
    return 0;
}

sub kill_workers {
    open my $fh, '<', "$ENV{TEST_NGINX_SERVER_ROOT}/logs/nginx.pid" or return;
    my $master = <$fh>;
    chomp $master;
    system("pkill -KILL -P $master");
}

# a second nginx on the next port: same helix.yaml, same database
our $Second = "/tmp/helix-tasks-second-$$";

sub start_second {
    my ($own) = @_;    # a helix.yaml of its own, or the test's
    my $port = $Port + 1;
    my $yaml = "$ENV{TEST_NGINX_SERVER_ROOT}/html/helix.yaml";
    system("mkdir -p $Second/conf $Second/logs");
    if (defined $own) {
        $yaml = "$Second/conf/helix.yaml";
        open my $y, '>', $yaml or die;
        print $y $own;
        close $y;
    }
    open my $fh, '>', "$Second/conf/nginx.conf" or die;
    print $fh "load_module $ENV{TEST_NGINX_LOAD_MODULES};\npid logs/nginx.pid;\n"
        . "error_log logs/error.log notice;\nworker_processes 2;\nevents {}\nhttp {\n"
        . "client_body_temp_path $Second/body;\nproxy_temp_path $Second/proxy;\n"
        . Helix::http_config(loopback => $port) =~ s{\.\./html/helix\.yaml}{$yaml}r
        . "server {\nlisten 127.0.0.1:$port;\n" . $Config . "}\n}\n";
    close $fh;
    system("$ENV{TEST_NGINX_BINARY} -p $Second/ -c conf/nginx.conf") == 0 or return 0;
    for (1 .. 100) {
        return 1 if `curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$port/v1/models` eq '200';
        select(undef, undef, undef, 0.05);
    }
    return 0;
}

sub stop_second { Helix::stop_nginx_in($Second, kill => 0); }

add_cleanup_handler(sub { Helix::stop_nginx_in($Second); system("rm -rf $Second"); });

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the worker running a task is killed: after the lease the task runs again and completes once
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  lease: 1500ms\n  concurrency: 1\n")
--- request eval
["POST /mock/reset",
 "POST /mock/openai/faults\n" . '{"latency_ms": 5000, "count": 1, "route": "/v1/chat/completions"}',
 "POST /v1/tasks\n" . '{"type": "completion", "payload": {"prompt": "outlive my worker", "model": "gpt-4o"}}']
--- error_code eval: [200, 200, 202]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/;
    main::wait_log(qr/task \Q$id\E \(completion\) claimed, attempt 1 of 3/) or return "never claimed";
    # the slow answer must be the one being waited for when the worker
    # dies, or attempt 2 would get it and time out
    main::mock_inflight() or return "the call never reached the provider";
    main::kill_workers();
    my $st = HelixPg::wait_sql("SELECT status FROM background_tasks WHERE id = '$id'", qr/completed|failed/);
    my $row = HelixPg::psql("SELECT attempts, result->>'object', lease_owner IS NULL FROM background_tasks WHERE id = '$id'");
    my $log = main::error_log("$ENV{TEST_NGINX_SERVER_ROOT}/logs/error.log");
    my $stored = () = $log =~ /task \Q$id\E completed/g;
    return "$st $row stored $stored";
}])
--- response_body eval
["", "", "completed 2|text_completion|t stored 1"]
--- error_log eval
[qr/lease expired, now pending/, qr/claimed, attempt 2 of 3/]
--- ignore_alerts



=== TEST 1b: the worker retrying a callback is killed: another one takes the callback up after the lease, and goes on counting its attempts
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  lease: 1500ms\n  callback_backoff: 3s\n")
--- request eval
["POST /mock/reset",
 "POST /mock/openai/faults\n" . '{"route": "GET /v1/models", "status": 503, "count": 2}',
 "POST /v1/tasks\n" . qq({"type": "completion", "payload": {"prompt": "call me back $$", "model": "gpt-4o", "callback_url": "$::Base/callback"}})]
--- error_code eval: [200, 200, 202]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/;
    main::wait_log(qr/task \Q$id\E: callback to \S+ failed \(HTTP 503\), again in 3000 ms/) or return "no failed callback";
    main::kill_workers();
    HelixPg::wait_sql("SELECT callback_status FROM background_tasks WHERE id = '$id'", qr/delivered|failed/, 30)
        . " " . HelixPg::psql("SELECT status, attempts, callback_attempts FROM background_tasks WHERE id = '$id'");
}])
--- response_body eval
["", "", "delivered completed|1|3"]
--- error_log eval
[qr/callback taken up \(its worker went away or had no room\), 1 attempts made/, qr/callback delivered \(HTTP 200, attempt 3\)/]
--- ignore_alerts
--- timeout: 40



=== TEST 2: an nginx stopped and started again while its task runs: the task completes, once
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  enabled: false\n")
--- request eval
["POST /mock/reset",
 "POST /mock/openai/faults\n" . '{"latency_ms": 3000, "count": 1, "route": "/v1/chat/completions"}',
 "POST /v1/tasks\n" . '{"type": "completion", "payload": {"prompt": "outlive my nginx", "model": "gpt-4o"}}']
--- error_code eval: [200, 200, 202]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/;
    # the runner: a second nginx (this one does not run tasks)
    my $yaml = ($Helix::Providers . HelixPg::yaml() . "tasks:\n  poll_interval: 300ms\n  lease: 1500ms\n");
    main::start_second($yaml) or return "second node did not start";
    for (1 .. 400) { last if main::error_log("$::Second/logs/error.log") =~ /task \Q$id\E \(completion\) claimed/; select(undef, undef, undef, 0.05); }
    main::stop_second();
    main::start_second($yaml) or return "second node did not start again";
    my $st = HelixPg::wait_sql("SELECT status FROM background_tasks WHERE id = '$id'", qr/completed|failed/);
    main::stop_second();
    my $log = main::error_log("$::Second/logs/error.log");
    my $claimed = () = $log =~ /task \Q$id\E \(completion\) claimed/g;
    my $stored = () = $log =~ /task \Q$id\E completed/g;
    system("rm -rf $::Second");
    return "$st, claimed " . ($claimed >= 1 ? "yes" : "no") . ", stored $stored";
}])
--- response_body eval
["", "", "completed, claimed yes, stored 1"]



=== TEST 3: two nginx instances on one database: every task runs exactly once
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  concurrency: 4\n")
--- request eval
["GET /v1/models"]
--- response_body_filters eval
sub {
    HelixPg::psql("DELETE FROM background_tasks");
    main::start_second() or return "second node did not start";
    my $n = 40;
    for my $i (1 .. $n) {
        my $port = $i % 2 ? $::Port : $::Port + 1;
        my ($code) = HelixPg::curl('POST', "http://127.0.0.1:$port/v1/tasks",
            qq({"type": "completion", "payload": {"prompt": "twice? $i $$"}}));
        return "task $i: HTTP $code" unless $code == 202;
    }
    my $done = HelixPg::wait_sql("SELECT count(*) FROM background_tasks WHERE status = 'completed'", qr/^$n$/, 60);
    main::stop_second();
    my $once = HelixPg::psql("SELECT count(*) FROM background_tasks WHERE status = 'completed' AND attempts = 1");
    my $a = () = main::error_log("$ENV{TEST_NGINX_SERVER_ROOT}/logs/error.log") =~ /\) claimed, attempt/g;
    my $b = () = main::error_log("$::Second/logs/error.log") =~ /\) claimed, attempt/g;
    return "completed $done, once $once, claims " . ($a + $b);
}
--- response_body: completed 40, once 40, claims 40
--- timeout: 90
