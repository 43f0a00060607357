# Background tasks (POST /v1/tasks) against the suite's PostgreSQL: the
# row is committed before the 202, any worker of any nginx claims it
# (priority, then age), runs it through the gateway's own endpoints,
# stores the result once and POSTs it to callback_url.  A callback
# receiver is a location here: its access log keeps each body it got.
use Test::Nginx::Socket 'no_plan';
use Helix;
use HelixPg;

HelixPg::reset();

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";
our $CbLog = "$ENV{TEST_NGINX_SERVER_ROOT}/logs/callback.log";

our $HttpConfig = Helix::http_config(extra => <<'_EOC_');
    log_format helix_cb '$request_body';
_EOC_

our $Config = Helix::config(extra => <<"_EOC_");
    location /v1/tasks { helix_endpoint tasks; }
    location = /callback {
        access_log logs/callback.log helix_cb;
        client_body_buffer_size 64k;
        proxy_method GET;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_pass http://127.0.0.1:$ENV{TEST_NGINX_OPENAI_PORT}/v1/models;
    }
_EOC_

sub yaml {
    my ($tasks) = @_;
    return ">>> helix.yaml\n$Helix::Providers" . HelixPg::yaml()
        . "tasks:\n  poll_interval: 300ms\n  callback_backoff: 100ms\n"
        . "  callback_allow: [127.0.0.0/8]\n" . ($tasks // '');
}

sub post_task {
    my ($json) = @_;
    my ($code, $body) = HelixPg::curl('POST', "$Base/v1/tasks", $json, 'Content-Type: application/json');
    my ($id) = $body =~ /"task_id":"([^"]+)"/;
    return ($code, $id, $body);
}

sub wait_status {
    my ($id, $re) = @_;
    return HelixPg::wait_sql("SELECT status FROM background_tasks WHERE id = '$id'", $re);
}

sub wait_file {
    my ($file, $re) = @_;
    for (1 .. 400) {
        if (open my $fh, '<', $file) { local $/; my $c = <$fh>; return $c if $c =~ $re; }
        select(undef, undef, undef, 0.05);
    }
    return '';
}

our $Pending;    # a task left pending by one nginx for the next one

no_shuffle();
run_tests();

__DATA__

=== TEST 1: bad task input is a 400 naming the field, nothing is written
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /v1/tasks\n{not json",
 "POST /v1/tasks\n" . '{"type": "dance", "payload": {"prompt": "x"}}',
 "POST /v1/tasks\n" . '{"type": "completion"}',
 "POST /v1/tasks\n" . '{"type": "completion", "payload": {"model": "gpt-4o"}}',
 "POST /v1/tasks\n" . '{"type": "batch_completion", "payload": {"requests": []}}',
 "POST /v1/tasks\n" . '{"type": "batch_completion", "payload": {"requests": [{"prompt": "a"}, 7]}}',
 "POST /v1/tasks\n" . '{"type": "completion", "payload": {"prompt": "x"}, "priority": "high"}',
 "POST /v1/tasks\n" . '{"type": "completion", "payload": {"prompt": "x", "callback_url": "ftp://x"}}',
 "POST /v1/tasks\n",
 "GET /v1/tasks/no-such-task",
 "GET /v1/tasks/bad%20id",
 "PUT /v1/tasks/x\nabc"]
--- error_code eval: [400, 400, 400, 400, 400, 400, 400, 400, 400, 404, 404, 405]
--- response_body_filters eval
Helix::per_request([(sub { $_[0] }) x 11, sub { HelixPg::psql("SELECT count(*) FROM background_tasks") }])
--- response_body_like eval
['"code":"invalid_json"', '"param":"type"', '"param":"payload"', '"param":"payload"',
 '"param":"payload.requests"', 'request 1 of', '"param":"priority"', '"param":"payload.callback_url"',
 'request body is empty', '"code":"task_not_found"', '"code":"task_not_found"', '^0$']



=== TEST 2: lifecycle: 202 pending, then completed with the answer, GET shows it, the callback gets it
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /v1/tasks\n" . qq({"type": "completion", "priority": 5, "payload": {"prompt": "task one", "model": "gpt-4o", "callback_url": "$::Base/callback"}})]
--- error_code: 202
--- response_body_filters eval
sub {
    my ($id) = $_[0] =~ /^\{"task_id":"(task-[0-9a-f-]+)","status":"pending","task_token":"[0-9a-f]{32}"\}$/ or return "bad answer: $_[0]";
    my $st = main::wait_status($id, qr/completed|failed/);
    my ($code, $get) = HelixPg::curl('GET', "$::Base/v1/tasks/$id");
    my $cb = main::wait_file($::CbLog, qr/\Q$id\E/);
    my $row = HelixPg::psql("SELECT attempts, callback_status, callback_attempts FROM background_tasks WHERE id = '$id'");
    $row = HelixPg::wait_sql("SELECT attempts, callback_status, callback_attempts FROM background_tasks WHERE id = '$id'", qr/delivered/);
    return join "\n", "status $st", "get $code",
        ($get =~ /"status" : "completed"|"status":"completed"/ ? "get completed" : "get: $get"),
        ($get =~ /text_completion/ && $get =~ /Mock answer/ ? "result ok" : "result: $get"),
        ($get =~ /"created_at"/ && $get =~ /"completed_at"/ ? "timestamps" : "no timestamps"),
        ($cb =~ /\{\\x22task_id\\x22:\\x22\Q$id\E\\x22,\\x22status\\x22:\\x22completed\\x22,\\x22result\\x22:\{/ ? "callback ok" : "callback: $cb"),
        "row $row";
}
--- response_body eval
"status completed\nget 200\nget completed\nresult ok\ntimestamps\ncallback ok\nrow 1|delivered|1"
--- error_log eval
[qr/task task-\S+ \(completion\) claimed, attempt 1 of 3/, qr/callback delivered \(HTTP 200, attempt 1\)/]



=== TEST 3: cancel: DELETE a pending task -> cancelled; again -> 409; unknown -> 404
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  enabled: false\n")
--- request eval
["POST /v1/tasks\n" . '{"type": "completion", "payload": {"prompt": "cancel me"}}']
--- error_code: 202
--- response_body_filters eval
sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/;
    my @r;
    push @r, join ' ', HelixPg::curl('DELETE', "$::Base/v1/tasks/$id");
    push @r, join ' ', HelixPg::curl('DELETE', "$::Base/v1/tasks/$id");
    push @r, join ' ', HelixPg::curl('DELETE', "$::Base/v1/tasks/task-nope");
    push @r, HelixPg::psql("SELECT status, completed_at IS NOT NULL FROM background_tasks WHERE id = '$id'");
    my $s = join "\n", @r;
    $s =~ s/\Q$id\E/ID/g;
    return $s;
}
--- response_body_like
^200 \{"task_id":"ID","status":"cancelled"\}
409 \{"error":\{"message":"task \\"ID\\" is cancelled: only a pending task can be cancelled".*\}
404 \{"error":\{.*"code":"task_not_found".*\}
cancelled\|t$



=== TEST 4: a task left pending by a stopped nginx ...
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  enabled: false\n")
--- request eval
["POST /v1/tasks\n" . '{"type": "completion", "payload": {"prompt": "survive a restart"}}']
--- error_code: 202
--- response_body_filters eval
sub { ($::Pending) = $_[0] =~ /"task_id":"([^"]+)"/; HelixPg::psql("SELECT status FROM background_tasks WHERE id = '$::Pending'") }
--- response_body: pending



=== TEST 4b: ... is run by the next one
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["GET /v1/models"]
--- response_body_filters eval
sub { main::wait_status($::Pending, qr/completed|failed/) . ' ' . HelixPg::psql("SELECT attempts, result->>'object' FROM background_tasks WHERE id = '$::Pending'") }
--- response_body: completed 1|text_completion



=== TEST 5: claim order: priority first, then age
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  concurrency: 1\n")
--- request eval
["GET /v1/models"]
--- response_body_filters eval
sub {
    HelixPg::psql("DELETE FROM background_tasks");
    HelixPg::psql("BEGIN; INSERT INTO background_tasks (id, type, payload, priority, created_at) VALUES "
        . "('t-low', 'completion', '{\"prompt\": \"low\"}', 1, now() - interval '3 s'), "
        . "('t-high-new', 'completion', '{\"prompt\": \"high new\"}', 5, now() - interval '1 s'), "
        . "('t-high-old', 'completion', '{\"prompt\": \"high old\"}', 5, now() - interval '2 s'), "
        . "('t-mid', 'completion', '{\"prompt\": \"mid\"}', 3, now()); NOTIFY helix_tasks; COMMIT;");
    HelixPg::wait_sql("SELECT count(*) FROM background_tasks WHERE status = 'completed'", qr/^4$/);
    return HelixPg::psql("SELECT string_agg(id, ' ' ORDER BY started_at) FROM background_tasks");
}
--- response_body: t-high-old t-high-new t-mid t-low



=== TEST 6: EXPLAIN: the pending-task claim reads idx_tasks_pending
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  enabled: false\n")
--- request eval
["GET /v1/models"]
--- response_body_filters eval
sub {
    HelixPg::psql("INSERT INTO background_tasks (type, payload, status) SELECT 'completion', '{}', 'completed' FROM generate_series(1, 20000)");
    HelixPg::psql("INSERT INTO background_tasks (type, payload) SELECT 'completion', '{}' FROM generate_series(1, 5)");
    HelixPg::psql("ANALYZE background_tasks");
    # the claim as the module sends it (src/ngx_http_helix_tasks.c), its
    # parameters filled in; EXPLAIN without ANALYZE changes nothing
    my $plan = HelixPg::psql("EXPLAIN UPDATE background_tasks t SET status = 'running', "
        . "attempts = t.attempts + 1, lease_owner = 'w', "
        . "lease_expires_at = now() + 30000 * interval '1 millisecond', "
        . "started_at = now(), updated_at = now() "
        . "FROM (SELECT id FROM background_tasks WHERE status = 'pending' "
        . "AND (not_before IS NULL OR not_before <= now()) "
        . "ORDER BY priority DESC, created_at LIMIT 4 "
        . "FOR UPDATE SKIP LOCKED) c "
        . "WHERE t.id = c.id "
        . "RETURNING t.id, t.type, t.payload::text, t.callback_url, t.attempts, "
        . "t.max_attempts, t.api_key_name, t.client_addr");
    HelixPg::psql("DELETE FROM background_tasks");
    return $plan =~ /Index Scan using idx_tasks_pending on background_tasks/ ? "uses idx_tasks_pending" : $plan;
}
--- response_body: uses idx_tasks_pending



=== TEST 7: a failing callback is retried with backoff until it is delivered
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset", "POST /mock/openai/faults\n" . '{"route": "GET /v1/models", "status": 503, "count": 2}',
 "POST /v1/tasks\n" . qq({"type": "completion", "payload": {"prompt": "retry my callback", "callback_url": "$::Base/callback"}})]
--- error_code eval: [200, 200, 202]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/;
    HelixPg::wait_sql("SELECT callback_status, callback_attempts FROM background_tasks WHERE id = '$id'", qr/delivered/);
}])
--- response_body eval
["", "", "delivered|3"]
--- error_log eval
[qr/callback to \S+ failed \(HTTP 503\), again in 100 ms/, qr/failed \(HTTP 503\), again in 200 ms/,
 qr/callback delivered \(HTTP 200, attempt 3\)/]



=== TEST 8: batch_completion: every request has its own outcome, in request order
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /v1/tasks\n" . '{"type": "batch_completion", "payload": {"requests": [{"prompt": "b one", "model": "gpt-4o"}, {"prompt": "b two", "model": "no-such-model"}, {"messages": [{"role": "user", "content": "b three"}], "model": "claude-3-haiku-20240307"}]}}']
--- error_code: 202
--- response_body_filters eval
sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/;
    main::wait_status($id, qr/completed|failed/);
    HelixPg::psql("SELECT status, jsonb_array_length(result->'results'), "
        . "(SELECT string_agg((r->>'index') || ':' || (r->>'status') || ':' || coalesce(r->'response'->>'object', r->'error'->>'code', '-'), ' ') "
        . "FROM jsonb_array_elements(result->'results') r) FROM background_tasks WHERE id = '$id'");
}
--- response_body: completed|3|0:200:text_completion 1:404:model_not_found 2:200:chat.completion



=== TEST 9: PostgreSQL down: POST /v1/tasks is a 503 and nothing is half-written; back: 202 again
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /v1/tasks\n" . '{"type": "completion", "payload": {"prompt": "before the outage"}}']
--- error_code: 202
--- response_body_filters eval
sub {
    my $before = HelixPg::psql("SELECT count(*) FROM background_tasks");
    HelixPg::stop();
    my ($code, $body) = HelixPg::curl('POST', "$::Base/v1/tasks", '{"type": "completion", "payload": {"prompt": "during"}}');
    my ($gcode) = HelixPg::curl('GET', "$::Base/v1/tasks/task-x");
    HelixPg::start();
    my $after = HelixPg::psql("SELECT count(*) FROM background_tasks");
    my $back = 0;
    for (1 .. 100) {    # the pool tries again after its backoff
        my ($c) = HelixPg::curl('POST', "$::Base/v1/tasks", '{"type": "completion", "payload": {"prompt": "after"}}');
        if ($c == 202) { $back = 1; last; }
        select(undef, undef, undef, 0.1);
    }
    return "down $code $gcode " . ($body =~ /database_unavailable/ ? "named" : $body)
        . " rows " . ($before == $after ? "same" : "$before->$after") . " back $back";
}
--- response_body: down 503 503 named rows same back 1
--- error_log eval
[qr/postgresql 127.0.0.1:\d+ unreachable/, qr/postgresql 127.0.0.1:\d+ answers again/]
