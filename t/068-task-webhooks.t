# Webhooks (a task's callback_url) are signed and idempotent: with
# tasks.callback_secret each attempt carries X-Helix-Timestamp and
# X-Helix-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>,
# which the receiver here checks with the secret; every attempt carries
# Idempotency-Key: <task id>, the same across retries and across a worker
# that dies and leaves the callback to another, which goes on counting
# attempts from where the first stopped.  Without a secret: no signature.
# The receiver is a location whose access log keeps the headers and the
# body of each attempt.
use Test::Nginx::Socket 'no_plan';
use Digest::SHA qw(hmac_sha256_hex);
use Helix;
use HelixPg;

master_on();
workers(1);

HelixPg::reset();

# the secret comes from the environment, as in the demo's helix.yaml
$ENV{HELIX_CALLBACK_SECRET} = 'whsec-helix-test-0123456789';

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";
our $Hooks = "$ENV{TEST_NGINX_SERVER_ROOT}/logs/webhook.log";

our $HttpConfig = Helix::http_config(extra => <<'_EOC_');
    log_format helix_wh escape=none
        '$http_x_helix_timestamp|$http_x_helix_signature|$http_idempotency_key|$status|$request_body';
_EOC_

our $Config = Helix::config(cache => 0, extra => <<"_EOC_");
    location /v1/tasks { helix_endpoint tasks; }
    location = /callback {
        access_log logs/webhook.log helix_wh;
        client_body_buffer_size 64k;
        proxy_method GET;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_pass http://127.0.0.1:$ENV{TEST_NGINX_OPENAI_PORT}/v1/models;
    }
_EOC_

sub yaml {
    my ($secret, $tasks) = @_;
    return ">>> helix.yaml\n$Helix::Providers" . HelixPg::yaml()
        . "tasks:\n  poll_interval: 300ms\n  callback_allow: [127.0.0.0/8]\n"
        . "  callback_secret: $secret\n" . ($tasks // '');
}

sub task {
    my ($prompt) = @_;
    return qq({"type": "completion", "payload": {"prompt": "$prompt $$", "model": "gpt-4o", "callback_url": "$Base/callback"}});
}

# the attempts the receiver got for a task, once $n of them are there
sub hooks {
    my ($id, $n) = @_;
    my @l;
    for (1 .. 600) {
        if (open my $fh, '<', $Hooks) {
            @l = grep { index($_, qq("task_id":"$id")) >= 0 } <$fh>;
            chomp @l;
            last if @l >= $n;
        }
        select(undef, undef, undef, 0.05);
    }
    return @l;
}

# what the receiver makes of one attempt
sub check {
    my ($line, $id) = @_;
    my ($ts, $sig, $key, $status, $body) = split /\|/, $line, 5;
    my @r = ("HTTP $status");
    if ($sig =~ /^-?$/ && $ts =~ /^-?$/) {
        push @r, "unsigned";
    } else {
        my $mac = hmac_sha256_hex("$ts.$body", $ENV{HELIX_CALLBACK_SECRET});
        push @r, $sig eq "sha256=$mac" ? "signature ok" : "bad signature $sig (want $mac)";
        push @r, abs(time() - $ts) < 300 ? "fresh" : "timestamp $ts";
        my $forged = hmac_sha256_hex("$ts.$body x", $ENV{HELIX_CALLBACK_SECRET});
        push @r, "a changed body would fail" if $sig ne "sha256=$forged";
    }
    push @r, $key eq $id ? "key is the task id" : "key $key";
    return join ', ', @r;
}

sub error_log {
    open my $fh, '<', "$ENV{TEST_NGINX_SERVER_ROOT}/logs/error.log" or return '';
    local $/;
    return <$fh>;
}

sub kill_workers {
    open my $fh, '<', "$ENV{TEST_NGINX_SERVER_ROOT}/logs/nginx.pid" or return;
    my $master = <$fh>;
    chomp $master;
    system("pkill -KILL -P $master");
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a signed callback: the receiver checks the HMAC with the secret; the idempotency key is the task id
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml('${HELIX_CALLBACK_SECRET:-}')
--- request eval
"POST /v1/tasks\n" . main::task("signed")
--- error_code: 202
--- response_body_filters eval
sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    my @l = main::hooks($id, 1);
    return join("\n", map { main::check($_, $id) } @l) . "\n";
}
--- response_body
HTTP 200, signature ok, fresh, a changed body would fail, key is the task id



=== TEST 2: a callback retried twice: each attempt signed on its own, one idempotency key for all
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml('${HELIX_CALLBACK_SECRET:-}', "  callback_backoff: 100ms\n")
--- request eval
["POST /mock/reset",
 "POST /mock/openai/faults\n" . '{"route": "GET /v1/models", "status": 503, "count": 2}',
 "POST /v1/tasks\n" . main::task("retried")]
--- error_code eval: [200, 200, 202]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    my @l = main::hooks($id, 3);
    my $row = HelixPg::wait_sql("SELECT callback_status || ' ' || callback_attempts FROM background_tasks "
        . "WHERE id = '$id'", qr/delivered|failed/);
    return join("\n", (map { main::check($_, $id) } @l), $row) . "\n";
}])
--- response_body eval
["", "", "HTTP 503, signature ok, fresh, a changed body would fail, key is the task id
HTTP 503, signature ok, fresh, a changed body would fail, key is the task id
HTTP 200, signature ok, fresh, a changed body would fail, key is the task id
delivered 3
"]



=== TEST 3: no secret (an unset variable): no signature, no timestamp; still the idempotency key
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml('${HELIX_NO_SUCH_SECRET:-}')
--- request eval
"POST /v1/tasks\n" . main::task("unsigned")
--- error_code: 202
--- response_body_filters eval
sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    my @l = main::hooks($id, 1);
    return join("\n", map { main::check($_, $id) } @l) . "\n";
}
--- response_body
HTTP 200, unsigned, key is the task id



=== TEST 4: the worker retrying a callback is killed: the one that takes it up goes on from attempt 2, same key, still signed
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml('${HELIX_CALLBACK_SECRET:-}', "  lease: 1500ms\n  callback_backoff: 2s\n")
--- request eval
["POST /mock/reset",
 "POST /mock/openai/faults\n" . '{"route": "GET /v1/models", "status": 503, "count": 1}',
 "POST /v1/tasks\n" . main::task("outlive the worker")]
--- error_code eval: [200, 200, 202]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    for (1 .. 400) {
        last if main::error_log() =~ /task \Q$id\E: callback to \S+ failed \(HTTP 503\), again in 2000 ms/;
        select(undef, undef, undef, 0.05);
    }
    main::kill_workers();
    my @l = main::hooks($id, 2);
    my $row = HelixPg::wait_sql("SELECT callback_status || ' ' || callback_attempts FROM background_tasks "
        . "WHERE id = '$id'", qr/delivered|failed/, 30);
    return join("\n", (map { main::check($_, $id) } @l), $row) . "\n";
}])
--- response_body eval
["", "", "HTTP 503, signature ok, fresh, a changed body would fail, key is the task id
HTTP 200, signature ok, fresh, a changed body would fail, key is the task id
delivered 2
"]
--- error_log eval
[qr/callback taken up \(its worker went away or had no room\), 1 attempts made/,
 qr/callback delivered \(HTTP 200, attempt 2\)/]
--- ignore_alerts
--- timeout: 40
