# Background tasks and API keys: a task is made on behalf of the key that
# posted it (its name stored with the task, sent to the loopback behind
# the internal secret), so its calls are charged to that key's limits and
# logged under its name; a key at its limit makes the task wait, not
# fail, and it completes once when the key has room; with auth on only
# the posting key sees or cancels it (404 to others); the key-name header
# from outside is ignored; an oversized POST is 413 before it is read.
#
# A key's bucket lives in this nginx's shared memory: a new test block is
# a new nginx with full buckets, which is how these tests let "time pass"
# without waiting for a refill (the not_before a waiting task got is then
# moved to now() in the table).
use Test::Nginx::Socket 'no_plan';
use Helix;
use HelixPg;

HelixPg::reset();

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<'_EOC_');
    location /v1/tasks { helix_endpoint tasks; }
_EOC_

# keys "one" (limited to $rpm requests a window) and "two" (roomy)
sub yaml {
    my (%o) = @_;
    my $rpm = $o{rpm} // 3;
    my $window = $o{window} // '1h';
    my $auth = $o{auth} // 'true';
    my $tasks = $o{tasks} // "  poll_interval: 300ms\n";
    return ">>> helix.yaml\n$Helix::Providers" . HelixPg::yaml() . <<"_EOY_";
tasks:
$tasks
batch:
  max_concurrent: 1
admin:
  token: adm1n-token-0123456789abcdef0123456789abcdef
resources:
  requests:
    max_request_body: 2KB
auth:
  enabled: $auth
  keys:
    - name: one
      key: sk-one-0123456789abcdef0123456789abcdef
      requests_per_minute: $rpm
    - name: two
      key: sk-two-0123456789abcdef0123456789abcdef
      requests_per_minute: 100
rate_limit:
  window: $window
_EOY_
}

sub post_task {
    my ($key, $json) = @_;
    my @h = ('Content-Type: application/json');
    push @h, "Authorization: Bearer $key" if $key;
    my ($code, $body) = HelixPg::curl('POST', "$Base/v1/tasks", $json, @h);
    my ($id) = $body =~ /"task_id":"([^"]+)"/;
    return ($code, $id // "none: $body");
}

sub chat {
    my ($key, @more) = @_;
    return Helix::chat_limits("Authorization: Bearer $key", @more);
}

sub status {
    my ($id) = @_;
    return HelixPg::psql("SELECT status FROM background_tasks WHERE id = '$id'");
}

our @Ids;    # tasks left by one block for the next
our $Mark;   # when they were posted: completion rows after it

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a task is charged to the key that posted it, and its completion row carries the key's name
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 3)
--- more_headers
Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef
--- request eval
"POST /v1/tasks\n" . Helix::task_json("charged to one")
--- error_code: 202
--- response_headers
x-ratelimit-limit-requests: 3
x-ratelimit-remaining-requests: 2
--- response_body_filters eval
sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    my $st = HelixPg::wait_sql("SELECT status FROM background_tasks WHERE id = '$id'", qr/completed|failed/);
    my $owner = HelixPg::psql("SELECT api_key_name FROM background_tasks WHERE id = '$id'");
    # the POST and the task's call took two of three: one left, then none
    my $c1 = main::chat('sk-one-0123456789abcdef0123456789abcdef');
    my $c2 = main::chat('sk-one-0123456789abcdef0123456789abcdef');
    my $rows = HelixPg::wait_sql("SELECT count(*) FROM completions WHERE api_key_name = 'one' "
        . "AND endpoint = 'completions' AND status = 200", qr/^1$/);
    my $anon = HelixPg::psql("SELECT count(*) FROM completions WHERE api_key_name IS NULL");
    return join "\n", "task $st, owner $owner", "chat $c1", "chat $c2",
        "task rows of one: $rows", "rows without a key: $anon";
}
--- response_body eval
"task completed, owner one\nchat 200 limit 3 left 0\nchat 429 limit 3 left 0\ntask rows of one: 1\nrows without a key: 0"



=== TEST 2: the key-name header from outside, with no or a wrong secret, is no key and acts as no key
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 1)
--- request eval
["POST /v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "spoof 1"}]}',
 "POST /v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "spoof 2"}]}',
 "POST /v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "spoof 3"}]}',
 "POST /v1/tasks\n" . Helix::task_json("spoofed task")]
--- more_headers eval
["X-Helix-Key-Name: one",
 "X-Helix-Key-Name: one\nX-Helix-Internal: 00000000000000000000000000000000",
 "Authorization: Bearer sk-two-0123456789abcdef0123456789abcdef\nX-Helix-Key-Name: one\nX-Helix-Internal: 00000000000000000000000000000000",
 "Authorization: Bearer sk-two-0123456789abcdef0123456789abcdef\nX-Helix-Key-Name: one"]
--- error_code eval
[401, 401, 200, 202]
--- response_headers eval
["", "", "x-ratelimit-limit-requests: 100\nx-ratelimit-remaining-requests: 99", "x-ratelimit-limit-requests: 100"]
--- response_body_filters eval
Helix::per_request([sub { $_[0] =~ /missing_api_key/ ? "401 no key" : $_[0] },
 sub { $_[0] =~ /missing_api_key/ ? "401 no key" : $_[0] },
 sub { "" },
 sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    HelixPg::wait_sql("SELECT status FROM background_tasks WHERE id = '$id'", qr/completed|failed/);
    # "one" (one request a window) has not been touched by any of this
    my $c = main::chat('sk-one-0123456789abcdef0123456789abcdef');
    # two's chat and the task's call
    my $rows = HelixPg::wait_sql("SELECT count(*) FROM completions WHERE status = 200 "
        . "AND api_key_name = 'two'", qr/^2$/);
    return join "\n", "owner " . HelixPg::psql("SELECT api_key_name FROM background_tasks WHERE id = '$id'"),
        "one: $c", "rows of two: $rows";
 }])
--- response_body eval
["401 no key", "401 no key", "", "owner two\none: 200 limit 1 left 0\nrows of two: 2"]



=== TEST 3: GET and DELETE by another key are 404 like a task that does not exist; the owner (and the admin token) see it, the owner cancels it
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 100, tasks => "  enabled: false\n")
--- more_headers
Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef
--- request eval
"POST /v1/tasks\n" . Helix::task_json("one's own")
--- error_code: 202
--- response_body_filters eval
sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    my $u = "$::Base/v1/tasks/$id";
    my @r;
    my ($c, $b) = HelixPg::curl('GET', $u, undef, 'Authorization: Bearer sk-two-0123456789abcdef0123456789abcdef');
    push @r, "two GET $c " . ($b =~ /"code":"task_not_found"/ ? "task_not_found" : $b);
    ($c, $b) = HelixPg::curl('GET', "$::Base/v1/tasks/task-00000000-0000-0000-0000-000000000000",
        undef, 'Authorization: Bearer sk-two-0123456789abcdef0123456789abcdef');
    push @r, "two GET of no task $c " . ($b =~ /"code":"task_not_found"/ ? "task_not_found" : $b);
    ($c, $b) = HelixPg::curl('DELETE', $u, undef, 'Authorization: Bearer sk-two-0123456789abcdef0123456789abcdef');
    push @r, "two DELETE $c " . ($b =~ /"code":"task_not_found"/ ? "task_not_found" : $b);
    push @r, "still " . main::status($id);
    ($c, $b) = HelixPg::curl('GET', $u);
    push @r, "no key GET $c";
    ($c, $b) = HelixPg::curl('GET', $u, undef, 'X-Helix-Key-Name: one');
    push @r, "spoofed GET $c";
    ($c, $b) = HelixPg::curl('GET', $u, undef, 'Authorization: Bearer adm1n-token-0123456789abcdef0123456789abcdef');
    push @r, "admin GET $c " . ($b =~ /"api_key_name" ?: ?"one"/ ? "one's" : $b);
    ($c, $b) = HelixPg::curl('POST', "$::Base/v1/tasks", Helix::task_json("by admin"),
        'Authorization: Bearer adm1n-token-0123456789abcdef0123456789abcdef');
    push @r, "admin POST $c";
    ($c, $b) = HelixPg::curl('GET', $u, undef, 'Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef');
    push @r, "one GET $c " . ($b =~ /"status" ?: ?"pending"/ && $b =~ /"api_key_name" ?: ?"one"/ ? "pending, one's" : $b);
    ($c, $b) = HelixPg::curl('DELETE', $u, undef, 'Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef');
    push @r, "one DELETE $c " . ($b =~ /"status":"cancelled"/ ? "cancelled" : $b);
    push @r, "now " . main::status($id);
    return join "\n", @r;
}
--- response_body eval
"two GET 404 task_not_found
two GET of no task 404 task_not_found
two DELETE 404 task_not_found
still pending
no key GET 401
spoofed GET 401
admin GET 200 one's
admin POST 401
one GET 200 pending, one's
one DELETE 200 cancelled
now cancelled"



=== TEST 4: auth off: an anonymous task has no key and is read from its address, whatever key comes along; a known key's task is still its own
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(auth => 'false', tasks => "  enabled: false\n")
--- request eval
"POST /v1/tasks\n" . Helix::task_json("anonymous")
--- error_code: 202
--- response_body_filters eval
sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    my ($c, $b) = HelixPg::curl('GET', "$::Base/v1/tasks/$id");
    my ($c2) = HelixPg::curl('GET', "$::Base/v1/tasks/$id", undef, 'Authorization: Bearer sk-two-0123456789abcdef0123456789abcdef');
    my ($kc, $kid) = main::post_task('sk-one-0123456789abcdef0123456789abcdef', Helix::task_json("one, auth off"));
    return join "\n", "anyone GET $c " . ($b =~ /"api_key_name" ?: ?null/ ? "no owner" : $b),
        "two GET $c2",
        "owners " . HelixPg::psql("SELECT coalesce(api_key_name, '-') FROM background_tasks "
            . "WHERE id IN ('$id', '$kid') ORDER BY api_key_name NULLS FIRST");
}
--- response_body eval
"anyone GET 200 no owner\ntwo GET 200\nowners -\none"



=== TEST 5: tasks posted while no worker runs them (the runner is off here)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 100, tasks => "  enabled: false\n")
--- request eval
"GET /v1/models"
--- more_headers
Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef
--- response_body_filters eval
sub {
    HelixPg::psql("UPDATE background_tasks SET status = 'cancelled' WHERE status = 'pending'");
    $::Mark = HelixPg::psql("SELECT now()::text");
    @::Ids = map { (main::post_task('sk-one-0123456789abcdef0123456789abcdef', Helix::task_json("waits $_")))[1] } 1 .. 5;
    return HelixPg::psql("SELECT count(*) FROM background_tasks WHERE status = 'pending' AND api_key_name = 'one'");
}
--- response_body: 5



=== TEST 6: the key allows two calls: two tasks complete, three wait (pending, not before the key has room, attempt not counted)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 2)
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    my $in = join ',', map { "'$_'" } @::Ids;
    my $st = HelixPg::wait_sql("SELECT count(*) FILTER (WHERE status = 'completed') || ' completed, ' "
        . "|| count(*) FILTER (WHERE status = 'pending' AND not_before > now() + interval '20 minutes' "
        . "AND attempts = 0 AND lease_owner IS NULL AND error LIKE 'waiting: the key \"one\" is at its rate limit%') "
        . "|| ' waiting' FROM background_tasks WHERE id IN ($in)", qr/^2 completed, 3 waiting$/);
    my $rows = HelixPg::wait_sql("SELECT count(*) FROM completions WHERE api_key_name = 'one' "
        . "AND endpoint = 'completions' AND status = 200 AND created_at > '$::Mark'", qr/^2$/);
    return "$st\nrows $rows\n";
}
--- response_body
2 completed, 3 waiting
rows 2
--- error_log eval
[qr/task task-\S+ pending until the key "one" has room, in \d+ ms/]
--- no_error_log eval
[qr/\[error\]/, qr/task \S+ failed/]



=== TEST 7: when the key has room again the waiting tasks run, each completes once, one attempt each
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 100)
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    my $in = join ',', map { "'$_'" } @::Ids;
    # the time the key said to wait has passed
    HelixPg::psql("UPDATE background_tasks SET not_before = now() WHERE id IN ($in) AND status = 'pending'; "
        . "NOTIFY helix_tasks");
    my $st = HelixPg::wait_sql("SELECT string_agg(status || ' ' || attempts || ' ' || coalesce(error, '-'), ',') "
        . "FROM background_tasks WHERE id IN ($in)", qr/^(completed 1 -,){4}completed 1 -$/);
    my $rows = HelixPg::wait_sql("SELECT count(*) FROM completions WHERE api_key_name = 'one' "
        . "AND endpoint = 'completions' AND status = 200 AND created_at > '$::Mark'", qr/^5$/);
    my $done = HelixPg::psql("SELECT count(*) FROM background_tasks WHERE id IN ($in) "
        . "AND result::text LIKE '%Mock answer%'");
    return "$st\nrows $rows\nresults $done\n";
}
--- response_body
completed 1 -,completed 1 -,completed 1 -,completed 1 -,completed 1 -
rows 5
results 5
--- no_error_log
[error]



=== TEST 8: a batch task over its key's limit: the refused item waits for the key's time and is called again; the batch completes once
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 2, window => '10s')
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    # posted through SQL, as by another node: this nginx's buckets are full
    my $id = HelixPg::psql("INSERT INTO background_tasks (type, payload, api_key_name) VALUES "
        . "('batch_completion', '{\"requests\": [{\"prompt\": \"b0\", \"model\": \"gpt-4o\"}, "
        . "{\"prompt\": \"b1\", \"model\": \"gpt-4o\"}, {\"prompt\": \"b2\", \"model\": \"gpt-4o\"}]}', "
        . "'one') RETURNING id");
    $id =~ s/\n.*//s;
    HelixPg::psql("NOTIFY helix_tasks");
    my $st = HelixPg::wait_sql("SELECT status || ' ' || attempts FROM background_tasks WHERE id = '$id'",
        qr/completed|failed/);
    my $items = HelixPg::psql("SELECT string_agg((r->>'status'), ',' ORDER BY (r->>'index')::int) "
        . "FROM background_tasks, jsonb_array_elements(result->'results') r WHERE id = '$id'");
    my $waits = Helix::log_count(qr/task \Q$id\E: request \d+ waits \d+ ms for the key "one" to have room/);
    my $done = Helix::log_count(qr/task \Q$id\E completed/);
    return "$st\nitems $items\n" . ($waits >= 1 ? "waited" : "did not wait") . "\ncompleted $done times\n";
}
--- response_body
completed 1
items 200,200,200
waited
completed 1 times
--- no_error_log
[error]



=== TEST 9: an oversized POST /v1/tasks is 413 before its body is read; chunked, after; nothing is written
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 100)
--- request eval
["POST /v1/tasks\n" . ('x' x 3000),
 "POST /v1/tasks\n" . Helix::task_json('y' x 2500)]
--- more_headers
Authorization: Bearer sk-two-0123456789abcdef0123456789abcdef
--- error_code eval
[413, 413]
--- response_body_like eval
['"message":"request body of 3000 bytes is larger than max_request_body \(2048 bytes\)".*"code":"request_too_large"',
 '"code":"request_too_large".*\}\s*0$']
--- response_body_filters eval
Helix::per_request([sub { $_[0] }, sub { $_[0] . HelixPg::psql("SELECT count(*) FROM background_tasks WHERE payload::text LIKE '%yyyy%'") }])



=== TEST 10: a chunked POST /v1/tasks over max_request_body is 413 once read
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(auth => 'false')
--- raw_request eval
"POST /v1/tasks HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n" . sprintf("%x\r\n%s\r\n0\r\n\r\n", 2500, 'y' x 2500)
--- error_code: 413
--- response_body_like: "request body is larger than max_request_body \(2048 bytes\)".*"code":"request_too_large"



=== TEST 11: two keys with one name are refused at start (a key's name is its limits and its tasks)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml\n$Helix::Providers" . <<'_EOY_'
auth:
  enabled: true
  keys:
    - name: one
      key: sk-one-0123456789abcdef0123456789abcdef
    - name: one
      key: sk-other-0123456789abcdef0123456789abcdef
_EOY_
--- must_die
--- error_log
two keys are named "one": a key's name is its limits and its tasks



=== TEST 12: a task's answer is cached for its key's tenant: a hit for that key, a miss for another
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 100)
--- more_headers
Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef
--- request eval
"POST /v1/tasks\n" . Helix::task_json("tenant of one")
--- error_code: 202
--- response_body_filters eval
sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    my $st = HelixPg::wait_sql("SELECT status FROM background_tasks WHERE id = '$id'", qr/completed|failed/);
    my @out = ("task $st");
    for my $key ('sk-two-0123456789abcdef0123456789abcdef', 'sk-one-0123456789abcdef0123456789abcdef') {
        my $h = `curl -s -m 30 -D - -o /dev/null -H 'Content-Type: application/json' -H 'Authorization: Bearer $key' --data-binary '{"prompt": "tenant of one", "model": "gpt-4o"}' $::Base/v1/completions`;
        my ($cache) = $h =~ /^X-Cache: (\w+)/mi;
        push @out, ($key =~ /one/ ? "one" : "two") . " " . ($cache // "none");
    }
    return join "\n", @out;
}
--- response_body eval
"task completed\ntwo MISS\none HIT"
