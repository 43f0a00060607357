# Background tasks cannot starve others or fill the disk: a task's body
# is capped (tasks.max_payload, 413), a key or an address may have only
# tasks.max_pending tasks pending or running (429), a client-chosen
# priority is capped (tasks.max_priority, or the key's
# max_task_priority: 400 above), finished tasks go after
# tasks.retention (worker 0 purges them), and a callback that keeps
# failing holds no execution slot.  An anonymous task is its address's:
# from another address (curl --interface 127.0.0.2) it does not exist
# unless its task_token comes along.
use Test::Nginx::Socket 'no_plan';
use Helix;
use HelixPg;

HelixPg::reset();

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<"_EOC_");
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
    return ">>> helix.yaml\n$Helix::Providers" . HelixPg::yaml() . <<"_EOY_" . ($tasks // '');
auth:
  enabled: false
  keys:
    - name: one
      key: sk-one-0123456789abcdef0123456789abcdef
    - name: vip
      key: sk-vip-0123456789abcdef0123456789abcdef
      max_task_priority: 500
tasks:
  poll_interval: 300ms
  callback_allow: [127.0.0.0/8]
_EOY_
}

# curl from a given source address (undef: the default 127.0.0.1)
sub curl_from {
    my ($from, $method, $path, $body, @headers) = @_;
    my $h = join ' ', map { "-H '$_'" } @headers;
    my $d = defined $body ? "--data-binary '$body'" : '';
    my $i = defined $from ? "--interface $from" : '';
    my $out = `curl -s -m 30 $i -X $method $h $d -w '\\n%{http_code}' '$Base$path'`;
    my ($b, $code) = $out =~ /^(.*)\n(\d+)$/s;
    return ($code // 0, $b // '');
}

sub post {
    my ($from, $json, @headers) = @_;
    my ($code, $body) = main::curl_from($from, 'POST', '/v1/tasks', $json,
        'Content-Type: application/json', @headers);
    return ($code, $body);
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a task over tasks.max_payload is 413 before its body is read; chunked, once read; nothing is written
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  enabled: false\n  max_payload: 1k\n")
--- request eval
["POST /v1/tasks\n" . Helix::task_json('z' x 1500),
 "POST /v1/tasks\n" . Helix::task_json('small enough')]
--- error_code eval
[413, 202]
--- response_body_like eval
['"message":"a task of \d+ bytes is larger than tasks.max_payload \(1024 bytes\)".*"code":"request_too_large".*\}\s*0$',
 '"task_id"']
--- response_body_filters eval
Helix::per_request([sub { $_[0] . HelixPg::psql("SELECT count(*) FROM background_tasks WHERE payload::text LIKE '%zzzz%'") },
 sub { $_[0] }])



=== TEST 1b: a chunked task over tasks.max_payload is 413 once read
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  enabled: false\n  max_payload: 1k\n")
--- raw_request eval
my $b = Helix::task_json('c' x 1500);
"POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n" . sprintf("%x\r\n%s\r\n0\r\n\r\n", length $b, $b)
--- error_code: 413
--- response_body_like: "a task of \d+ bytes is larger than tasks.max_payload \(1024 bytes\)".*"code":"request_too_large"



=== TEST 2: tasks.max_pending per address and per key: past it 429 (JSON), another owner is not counted, a cancel makes room
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  enabled: false\n  max_pending: 2\n")
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    HelixPg::psql("DELETE FROM background_tasks");
    my @out;
    my @ids;
    for my $i (1 .. 3) {
        my ($c, $b) = main::post(undef, Helix::task_json("anon $i"));
        push @ids, $b =~ /"task_id":"([^"]+)"/;
        push @out, "127.0.0.1 $i: $c" . ($c == 429 && $b =~ /"code":"too_many_pending_tasks"/
            && $b =~ /the address 127\.0\.0\.1 has 2 tasks pending or running already \(tasks\.max_pending\)/
            ? " too_many_pending_tasks" : $c == 202 ? "" : " $b");
    }
    my ($c) = main::post('127.0.0.2', Helix::task_json("other address"));
    push @out, "127.0.0.2: $c";
    for my $i (1 .. 3) {
        my ($c, $b) = main::post(undef, Helix::task_json("key $i"), 'Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef');
        push @out, "one $i: $c" . ($c == 429 && $b =~ /the key one has 2 tasks/ ? " key" : "");
    }
    # a running task counts as one pending
    HelixPg::psql("UPDATE background_tasks SET status = 'running' WHERE id = '$ids[0]'");
    ($c) = main::post(undef, Helix::task_json("still full"));
    push @out, "127.0.0.1 with one running: $c";
    ($c) = main::curl_from(undef, 'DELETE', "/v1/tasks/$ids[1]");
    push @out, "cancel: $c";
    ($c) = main::post(undef, Helix::task_json("room again"));
    push @out, "127.0.0.1 after the cancel: $c";
    return join("\n", @out) . "\n";
}
--- response_body
127.0.0.1 1: 202
127.0.0.1 2: 202
127.0.0.1 3: 429 too_many_pending_tasks
127.0.0.2: 202
one 1: 202
one 2: 202
one 3: 429 key
127.0.0.1 with one running: 429
cancel: 200
127.0.0.1 after the cancel: 202



=== TEST 3: priority above tasks.max_priority is refused (400) for an anonymous client and a key without its own cap; a key's max_task_priority allows more
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  enabled: false\n")
--- request eval
["POST /v1/tasks\n" . '{"type": "completion", "priority": 11, "payload": {"prompt": "p11"}}',
 "POST /v1/tasks\n" . '{"type": "completion", "priority": 10, "payload": {"prompt": "p10"}}',
 "POST /v1/tasks\n" . '{"type": "completion", "priority": -1000, "payload": {"prompt": "low"}}',
 "POST /v1/tasks\n" . '{"type": "completion", "priority": 11, "payload": {"prompt": "one p11"}}',
 "POST /v1/tasks\n" . '{"type": "completion", "priority": 500, "payload": {"prompt": "vip p500"}}',
 "POST /v1/tasks\n" . '{"type": "completion", "priority": 501, "payload": {"prompt": "vip p501"}}']
--- more_headers eval
["", "", "", "Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef", "Authorization: Bearer sk-vip-0123456789abcdef0123456789abcdef", "Authorization: Bearer sk-vip-0123456789abcdef0123456789abcdef"]
--- error_code eval
[400, 202, 202, 400, 202, 400]
--- response_body_like eval
['"message":".{1,2}priority.{1,2} may be at most 10 for an anonymous client \(tasks.max_priority\)".*"param":"priority"',
 '"task_id"',
 '"task_id"',
 'priority.{1,2} may be at most 10 for this key \(tasks.max_priority\)',
 '"task_id"',
 'priority.{1,2} may be at most 500 for this key \(its max_task_priority\)']



=== TEST 4: tasks.max_priority and a key's max_task_priority above 1000 are refused at start
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml\n$Helix::Providers" . <<'_EOY_'
auth:
  keys:
    - name: one
      key: sk-one-0123456789abcdef0123456789abcdef
      max_task_priority: 1001
_EOY_
--- must_die
--- error_log eval
qr/helix\.yaml:\d+: auth\.keys\[0\]: "max_task_priority" must be at most 1000|auth\.keys.*max_task_priority" must be at most 1000/



=== TEST 5: finished tasks older than tasks.retention are purged, a batch at a time; pending, recent and undelivered ones stay
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  retention: 2s\n  purge_interval: 200ms\n  purge_batch: 2\n")
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    HelixPg::psql("DELETE FROM background_tasks");
    my $old = "now() - interval '1 hour'";
    for my $st (qw(completed failed cancelled completed cancelled)) {
        HelixPg::psql("INSERT INTO background_tasks (id, type, payload, status, updated_at, completed_at) "
            . "VALUES ('old-$st-' || gen_random_uuid(), 'completion', '{}', '$st', $old, $old)");
    }
    HelixPg::psql("INSERT INTO background_tasks (id, type, payload, status, updated_at, not_before) VALUES "
        . "('keep-pending', 'completion', '{}', 'pending', $old, now() + interval '1 hour'), "
        . "('keep-recent', 'completion', '{}', 'completed', now() + interval '1 hour', NULL)");
    HelixPg::psql("INSERT INTO background_tasks (id, type, payload, status, updated_at, callback_url, "
        . "callback_status, lease_expires_at) VALUES ('keep-callback', 'completion', '{}', 'completed', $old, "
        . "'http://127.0.0.1:1/', 'pending', now() + interval '1 hour')");
    my $left = HelixPg::wait_sql("SELECT string_agg(id, ',' ORDER BY id) FROM background_tasks",
        qr/^keep-callback,keep-pending,keep-recent$/);
    my $logged = 0;
    for (1 .. 100) {
        $logged = 0;
        $logged += $_ for map { /purged (\d+) finished tasks/ ? $1 : 0 }
            split /\n/, `cat $ENV{TEST_NGINX_SERVER_ROOT}/logs/error.log`;
        last if $logged >= 5;
        select(undef, undef, undef, 0.05);
    }
    return "$left\npurged $logged\n";
}
--- response_body
keep-callback,keep-pending,keep-recent
purged 5
--- error_log eval
qr/purged 2 finished tasks older than tasks.retention \(2000 ms\)/



=== TEST 6: an anonymous task from another address: 404 for GET and DELETE, unless its task_token comes with them
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  enabled: false\n")
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    my ($c, $b) = main::post(undef, Helix::task_json("mine"));
    my ($id) = $b =~ /"task_id":"([^"]+)"/ or return "bad answer: $b";
    my ($token) = $b =~ /"task_token":"([0-9a-f]{32})"/ or return "no token: $b";
    my @out;
    ($c) = main::curl_from(undef, 'GET', "/v1/tasks/$id");
    push @out, "same address GET $c";
    ($c, $b) = main::curl_from('127.0.0.2', 'GET', "/v1/tasks/$id");
    push @out, "other GET $c" . ($b =~ /"code":"task_not_found"/ ? " task_not_found" : "");
    ($c) = main::curl_from('127.0.0.2', 'DELETE', "/v1/tasks/$id");
    push @out, "other DELETE $c";
    ($c) = main::curl_from('127.0.0.2', 'GET', "/v1/tasks/$id", undef, "X-Helix-Task-Token: " . ('0' x 32));
    push @out, "other GET, wrong token $c";
    ($c) = main::curl_from('127.0.0.2', 'GET', "/v1/tasks/$id", undef, "X-Helix-Task-Token: not-hex");
    push @out, "other GET, not a token $c";
    ($c) = main::curl_from('127.0.0.2', 'GET', "/v1/tasks/$id", undef, "X-Helix-Task-Token: $token");
    push @out, "other GET, token $c";
    ($c, $b) = main::curl_from('127.0.0.2', 'DELETE', "/v1/tasks/$id", undef, "X-Helix-Task-Token: $token");
    push @out, "other DELETE, token $c" . ($b =~ /"status":"cancelled"/ ? " cancelled" : " $b");
    # a key's task has no token, and its key is who may read it
    ($c, $b) = main::post(undef, Helix::task_json("the key one"), 'Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef');
    my ($kid) = $b =~ /"task_id":"([^"]+)"/;
    push @out, "key's task token: " . ($b =~ /task_token/ ? "yes" : "no");
    ($c) = main::curl_from(undef, 'GET', "/v1/tasks/$kid");
    push @out, "key's task, no key GET $c";
    ($c) = main::curl_from('127.0.0.2', 'GET', "/v1/tasks/$kid", undef, 'Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef');
    push @out, "key's task, key GET $c";
    push @out, "stored: " . HelixPg::psql("SELECT length(task_token) || ' ' || (task_token <> decode('$token', 'hex')) "
        . "FROM background_tasks WHERE id = '$id'");
    return join("\n", @out) . "\n";
}
--- response_body
same address GET 200
other GET 404 task_not_found
other DELETE 404
other GET, wrong token 404
other GET, not a token 404
other GET, token 200
other DELETE, token 200 cancelled
key's task token: no
key's task, no key GET 404
key's task, key GET 200
stored: 32 true



=== TEST 7: a task whose callback keeps failing frees its execution slot at once: the next task runs while the callback waits for its retry
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  concurrency: 1\n  callback_backoff: 3s\n  callback_retries: 1\n")
--- request eval
["POST /mock/reset",
 "POST /mock/openai/faults\n" . '{"route": "GET /v1/models", "status": 503, "count": 2}',
 "POST /v1/tasks\n" . qq({"type": "completion", "payload": {"prompt": "call me $$", "model": "gpt-4o", "callback_url": "$::Base/callback"}})]
--- error_code eval: [200, 200, 202]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    HelixPg::wait_sql("SELECT callback_attempts FROM background_tasks WHERE id = '$id'", qr/^1$/);
    my ($c, $b) = main::post(undef, Helix::task_json("next in line $$"));
    my ($next) = $b =~ /"task_id":"([^"]+)"/ or return "bad answer: $b";
    my $st = HelixPg::wait_sql("SELECT status FROM background_tasks WHERE id = '$next'", qr/completed|failed/);
    my $cb = HelixPg::psql("SELECT callback_status FROM background_tasks WHERE id = '$id'");
    my $end = HelixPg::wait_sql("SELECT callback_status || ' ' || callback_attempts FROM background_tasks WHERE id = '$id'",
        qr/failed|delivered/);
    return "next $st while the callback was $cb\ncallback then $end\n";
}])
--- response_body eval
["", "", "next completed while the callback was pending\ncallback then failed 2\n"]
--- timeout: 30



=== TEST 8: callback slots full (tasks.callback_concurrency: 1): the next callback is left in the table and the next claim delivers it once the slot is free
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  concurrency: 1\n  callback_concurrency: 1\n  callback_backoff: 1s\n")
--- request eval
["POST /mock/reset",
 "POST /mock/openai/faults\n" . '{"route": "GET /v1/models", "status": 503, "count": 1}',
 "POST /v1/tasks\n" . qq({"type": "completion", "payload": {"prompt": "first $$", "model": "gpt-4o", "callback_url": "$::Base/callback"}})]
--- error_code eval: [200, 200, 202]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub {
    my ($a) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    HelixPg::wait_sql("SELECT callback_attempts FROM background_tasks WHERE id = '$a'", qr/^1$/);
    my ($c, $b) = main::post(undef, qq({"type": "completion", "payload": {"prompt": "second $$", "model": "gpt-4o", "callback_url": "$::Base/callback"}}));
    my ($n) = $b =~ /"task_id":"([^"]+)"/ or return "bad answer: $b";
    my $st = HelixPg::wait_sql("SELECT string_agg(id || ' ' || callback_status || ' ' || callback_attempts, ',' "
        . "ORDER BY created_at) FROM background_tasks WHERE id IN ('$a', '$n')", qr/^[^,]+ delivered 2,[^,]+ delivered 1$/);
    $st =~ s/\Q$a\E/first/;
    $st =~ s/\Q$n\E/second/;
    my $left = Helix::log_count(qr/task \Q$n\E: callback left to the next claim \(1 being delivered here\)/);
    my $taken = Helix::log_count(qr/task \Q$n\E: callback taken up \(its worker went away or had no room\), 0 attempts made/);
    return "$st\nleft $left, taken up $taken\n";
}])
--- response_body eval
["", "", "first delivered 2,second delivered 1\nleft 1, taken up 1\n"]
--- timeout: 30
