# Background tasks and per-address limits (auth off, the demo's way): an
# anonymous task keeps the address it was posted from, and its calls
# name it to the loopback behind the internal secret
# (X-Helix-Client-Addr), so they are charged to that address's bucket as
# the client's own requests would be; an address at its limit makes the
# task wait, not fail, and it completes once when there is room; the
# header from outside is ignored; cache warming names no one and is not
# limited.
#
# Clients get their addresses through realip (X-Forwarded-For from
# 127.0.0.1), so that the address a task's call is charged to is seen to
# be the stored one, not the loopback's own 127.0.0.1.
#
# As in t/066: a bucket lives in this nginx's shared memory, a new test
# block is a new nginx with full buckets, which is how "time passes"
# without waiting for a refill (a waiting task's not_before is then
# moved to now() in the table).
use Test::Nginx::Socket 'no_plan';
use Helix;
use HelixPg;

HelixPg::reset();

# one worker claiming one task at a time: the order of claims is known
workers(1);

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<'_EOC_');
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Forwarded-For;
    location /v1/tasks { helix_endpoint tasks; }
_EOC_

# auth off: clients are limited per address to $rpm requests a window
sub yaml {
    my (%o) = @_;
    my $rpm = $o{rpm} // 3;
    my $window = $o{window} // '1h';
    my $auth = $o{auth} // 'false';
    my $tasks = $o{tasks} // "  poll_interval: 300ms\n  concurrency: 1\n";
    return ">>> helix.yaml\n$Helix::Providers" . HelixPg::yaml() . <<"_EOY_";
tasks:
$tasks
batch:
  max_concurrent: 1
auth:
  enabled: $auth
  keys:
    - name: one
      key: sk-one-0123456789abcdef0123456789abcdef
      requests_per_minute: 100
rate_limit:
  requests_per_minute: $rpm
  window: $window
_EOY_
}

sub post_task {
    my ($from, $json) = @_;
    my ($code, $body) = HelixPg::curl('POST', "$Base/v1/tasks", $json,
        'Content-Type: application/json', "X-Forwarded-For: $from");
    my ($id) = $body =~ /"task_id":"([^"]+)"/;
    return $id // "none: $code $body";
}

# a chat from an address (undef: 127.0.0.1 itself): status and limits
sub chat {
    my ($from, @more) = @_;
    push @more, "X-Forwarded-For: $from" if defined $from;
    return Helix::chat_limits(@more);
}

our @Ids;    # 10.0.0.9's tasks, left by one block for the next
our $Other;  # 10.0.0.10's task
our $Mark;   # when they were posted: completion rows after it

no_shuffle();
run_tests();

__DATA__

=== TEST 1: an anonymous task keeps its address; its call is charged to that address, not to the loopback's
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 3)
--- more_headers
X-Forwarded-For: 10.0.0.7
--- request eval
"POST /v1/tasks\n" . Helix::task_json("charged to 10.0.0.7")
--- error_code: 202
--- response_headers
x-ratelimit-limit-requests: 3
x-ratelimit-remaining-requests: 2
--- response_body_filters eval
sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    my $st = HelixPg::wait_sql("SELECT status FROM background_tasks WHERE id = '$id'", qr/completed|failed/);
    my $owner = HelixPg::psql("SELECT coalesce(api_key_name, '-') || ' ' || client_addr "
        . "FROM background_tasks WHERE id = '$id'");
    # the POST and the task's call took two of three: one left, then none
    my $c1 = main::chat('10.0.0.7');
    my $c2 = main::chat('10.0.0.7');
    # 127.0.0.1, where the task's call came from, has its three
    my $c3 = main::chat(undef);
    return join "\n", "task $st, owner $owner", "10.0.0.7: $c1", "10.0.0.7: $c2", "127.0.0.1: $c3";
}
--- response_body eval
"task completed, owner - 10.0.0.7
10.0.0.7: 200 limit 3 left 0
10.0.0.7: 429 limit 3 left 0
127.0.0.1: 200 limit 3 left 2"
--- no_error_log
[error]



=== TEST 2: the address header from outside, with no or a wrong secret, is ignored: the client is its own address
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 2, tasks => "  enabled: false\n")
--- request eval
["POST /v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "spoof 1"}]}',
 "POST /v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "spoof 2"}]}',
 "POST /v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "spoof 3"}]}',
 "POST /v1/tasks\n" . Helix::task_json("spoofed task")]
--- more_headers eval
["X-Helix-Client-Addr: 10.9.9.9",
 "X-Helix-Client-Addr: 10.9.9.9\nX-Helix-Internal: 00000000000000000000000000000000",
 "X-Helix-Client-Addr: 10.9.9.10",
 "X-Forwarded-For: 10.0.0.5\nX-Helix-Client-Addr: 10.9.9.9\nX-Helix-Internal: 00000000000000000000000000000000"]
--- error_code eval
[200, 200, 429, 202]
--- response_headers eval
["x-ratelimit-limit-requests: 2\nx-ratelimit-remaining-requests: 1",
 "x-ratelimit-remaining-requests: 0",
 "x-ratelimit-remaining-requests: 0",
 "x-ratelimit-remaining-requests: 1"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" },
 sub { $_[0] =~ /rate limit reached for requests .* of a:127\.0\.0\.1,/ ? "429 for 127.0.0.1" : $_[0] },
 sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    return "stored from " . HelixPg::psql("SELECT client_addr FROM background_tasks WHERE id = '$id'");
 }])
--- response_body eval
["", "", "429 for 127.0.0.1", "stored from 10.0.0.5"]



=== TEST 3: tasks posted while no worker runs them: five from 10.0.0.9, then one from 10.0.0.10
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 100, tasks => "  enabled: false\n")
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    HelixPg::psql("UPDATE background_tasks SET status = 'cancelled' WHERE status = 'pending'");
    $::Mark = HelixPg::psql("SELECT now()::text");
    @::Ids = map { main::post_task('10.0.0.9', Helix::task_json("waits $_")) } 1 .. 5;
    $::Other = main::post_task('10.0.0.10', Helix::task_json("another address"));
    return HelixPg::psql("SELECT client_addr || ' ' || count(*) FROM background_tasks "
        . "WHERE status = 'pending' AND api_key_name IS NULL GROUP BY client_addr ORDER BY client_addr") . "\n";
}
--- response_body
10.0.0.10 1
10.0.0.9 5



=== TEST 4: the address allows two calls: two tasks complete, the third waits and pushes back the address's other two; the other address's task runs
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 2)
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    my $in = join ',', map { "'$_'" } @::Ids;
    my $other = HelixPg::wait_sql("SELECT status || ' ' || (not_before IS NULL) FROM background_tasks "
        . "WHERE id = '$::Other'", qr/completed|failed/);
    my $st = HelixPg::wait_sql("SELECT count(*) FILTER (WHERE status = 'completed') || ' completed, ' "
        . "|| count(*) FILTER (WHERE status = 'pending' AND not_before > now() + interval '20 minutes' "
        . "AND attempts = 0 AND lease_owner IS NULL "
        . "AND error = 'waiting: the address 10.0.0.9 is at its rate limit') "
        . "|| ' waiting' FROM background_tasks WHERE id IN ($in)", qr/^2 completed, 3 waiting$/);
    my $rows = HelixPg::wait_sql("SELECT count(*) FROM completions WHERE endpoint = 'completions' "
        . "AND status = 200 AND created_at > '$::Mark'", qr/^3$/);
    # 10.0.0.9 has had its two in this nginx
    my $c = main::chat('10.0.0.9');
    return "10.0.0.10's task: $other\n10.0.0.9's: $st\nrows $rows\n10.0.0.9: $c\n";
}
--- response_body
10.0.0.10's task: completed true
10.0.0.9's: 2 completed, 3 waiting
rows 3
10.0.0.9: 429 limit 2 left 0
--- error_log eval
[qr/task task-\S+ pending until the address 10\.0\.0\.9 has room, in \d+ ms \(2 more of its tasks wait as long\)/]
--- no_error_log eval
[qr/\[error\]/, qr/task \S+ failed/]



=== TEST 5: when the address has room again the waiting tasks run, each completes once, one attempt each, charged to the address
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 100)
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    my $in = join ',', map { "'$_'" } @::Ids;
    # the time the address was told to wait has passed
    HelixPg::psql("UPDATE background_tasks SET not_before = now() WHERE id IN ($in) AND status = 'pending'; "
        . "NOTIFY helix_tasks");
    my $st = HelixPg::wait_sql("SELECT string_agg(status || ' ' || attempts || ' ' || coalesce(error, '-'), ',') "
        . "FROM background_tasks WHERE id IN ($in)", qr/^(completed 1 -,){4}completed 1 -$/);
    my $rows = HelixPg::wait_sql("SELECT count(*) FROM completions WHERE endpoint = 'completions' "
        . "AND status = 200 AND created_at > '$::Mark'", qr/^6$/);
    my @n = map { my $id = $_; Helix::log_count(qr/task \Q$id\E completed/) } @::Ids;
    my $once = grep { $_ == 1 } @n;
    my $none = grep { $_ == 0 } @n;
    # three calls of this nginx were 10.0.0.9's: 96 left after this one
    my $c = main::chat('10.0.0.9');
    return "$st\nrows $rows\ncompleted here once: $once, not here: $none\n10.0.0.9: $c\n";
}
--- response_body
completed 1 -,completed 1 -,completed 1 -,completed 1 -,completed 1 -
rows 6
completed here once: 3, not here: 2
10.0.0.9: 200 limit 100 left 96
--- no_error_log
[error]



=== TEST 6: a batch task over its address's limit: the refused item waits for the address's time and is called again; the batch completes once
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 2, window => '4s')
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    # posted through SQL, as by another node: this nginx's buckets are full
    my $id = HelixPg::psql("INSERT INTO background_tasks (type, payload, client_addr) VALUES "
        . "('batch_completion', '{\"requests\": [{\"prompt\": \"b0\", \"model\": \"gpt-4o\"}, "
        . "{\"prompt\": \"b1\", \"model\": \"gpt-4o\"}, {\"prompt\": \"b2\", \"model\": \"gpt-4o\"}]}', "
        . "'10.0.0.11') RETURNING id");
    $id =~ s/\n.*//s;
    HelixPg::psql("NOTIFY helix_tasks");
    my $st = HelixPg::wait_sql("SELECT status || ' ' || attempts FROM background_tasks WHERE id = '$id'",
        qr/completed|failed/);
    my $items = HelixPg::psql("SELECT string_agg((r->>'status'), ',' ORDER BY (r->>'index')::int) "
        . "FROM background_tasks, jsonb_array_elements(result->'results') r WHERE id = '$id'");
    my $waits = Helix::log_count(qr/task \Q$id\E: request \d+ waits \d+ ms for the address 10\.0\.0\.11 to have room/);
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



=== TEST 7: auth on now: a task posted without a key while auth was off is refused (401), not run unlimited
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(auth => 'true')
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    my $id = HelixPg::psql("INSERT INTO background_tasks (type, payload, client_addr) VALUES "
        . "('completion', '{\"prompt\": \"posted before\", \"model\": \"gpt-4o\"}', '10.0.0.12') RETURNING id");
    $id =~ s/\n.*//s;
    HelixPg::psql("NOTIFY helix_tasks");
    my $st = HelixPg::wait_sql("SELECT status || ' ' || error FROM background_tasks WHERE id = '$id'",
        qr/^(completed|failed)/);
    return $st =~ /^failed HTTP 401: .*posted without an API key \(from 10\.0\.0\.12, while auth was off\)/
        ? "failed 401\n" : "$st\n";
}
--- response_body
failed 401



=== TEST 8: a stored address that could not be one (a control character) fails the task before any call
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(rpm => 100)
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    my $id = HelixPg::psql("INSERT INTO background_tasks (type, payload, client_addr) VALUES "
        . "('completion', '{\"prompt\": \"bad addr\", \"model\": \"gpt-4o\"}', "
        . "E'10.0.0.13\\r\\nX-Helix-Key-Name: one') RETURNING id");
    $id =~ s/\n.*//s;
    HelixPg::psql("NOTIFY helix_tasks");
    return HelixPg::wait_sql("SELECT status || ': ' || error FROM background_tasks WHERE id = '$id'",
        qr/^(completed|failed)/) . "\n";
}
--- response_body
failed: the stored client_addr is not an address



=== TEST 9: cache warming names no one and is not limited: three warmed with a limit of one per address
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml\n$Helix::Providers" . <<"_EOY_"
cache:
  warming:
    enabled: true
    on_startup: true
    queries:
      - prompt: "Warm one"
        providers: ["claude", "gemini"]
      - prompt: "Warm two"
        providers: ["claude"]
rate_limit:
  requests_per_minute: 1
  window: 1h
_EOY_
--- wait_for_log eval
["cache warming done: 3 of 3 warmed"]
--- request
POST /v1/completions
{"prompt": "Warm two", "provider": "claude"}
--- response_headers
X-Cache: HIT
x-ratelimit-limit-requests: 1
x-ratelimit-remaining-requests: 0
--- response_body_like: "object":"text_completion"
