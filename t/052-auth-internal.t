# The module's own requests to its endpoints (background tasks, cache
# warming) carry an HMAC made with a secret made at start (X-Helix-Internal):
# with API keys required they still get through; a task posted with a key
# is made on that key's behalf and charged to it (t/066-task-keys.t has the
# rest); a client cannot forge the header, nor use one it has seen for
# another call or once it has expired.
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

our $Yaml = ">>> helix.yaml\n$Helix::Providers" . HelixPg::yaml() . <<'_EOY_';
tasks:
  poll_interval: 300ms
auth:
  enabled: true
  keys:
    - name: one
      key: sk-one-0123456789abcdef0123456789abcdef
      requests_per_minute: 2
rate_limit:
  window: 1h
_EOY_

# helix_loopback on a second server that notes the module's own calls
# (X-Helix-Internal and the headers it covers) and passes them on
our $CapturePort = $Port + 10;
our $CaptureHttpConfig = Helix::http_config(loopback => $CapturePort, extra => <<"_EOC_");
    log_format helix_capture '\$http_x_helix_internal|\$http_x_helix_task|\$http_x_helix_key_name|\$request_uri';
    server {
        listen 127.0.0.1:$CapturePort;
        location / {
            access_log logs/capture.log helix_capture;
            proxy_pass http://127.0.0.1:$Port;
        }
    }
_EOC_

# the call's header lives for tasks.timeout and a few seconds: keep it short
our $CaptureYaml = ">>> helix.yaml\n$Helix::Providers" . HelixPg::yaml() . <<'_EOY_';
tasks:
  poll_interval: 300ms
  timeout: 2s
auth:
  enabled: true
  keys:
    - name: one
      key: sk-one-0123456789abcdef0123456789abcdef
    - name: two
      key: sk-two-0123456789abcdef0123456789abcdef
_EOY_

# the first call the loopback saw
sub captured {
    my $f = "$ENV{TEST_NGINX_SERVER_ROOT}/logs/capture.log";
    for (1 .. 200) {
        if (open my $fh, '<', $f) {
            my $l = <$fh>;
            if (defined $l) { chomp $l; return $l; }
        }
        select(undef, undef, undef, 0.05);
    }
    return '';
}

# a POST straight to the gateway with these headers: its status
sub replay {
    my ($uri, $body, @headers) = @_;
    my ($code) = HelixPg::curl('POST', "$Base$uri", $body, 'Content-Type: application/json', @headers);
    return $code;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a task posted with a key runs through the gateway with auth on, charged to the key
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /v1/tasks\n" . '{"type": "completion", "payload": {"prompt": "internal task", "model": "gpt-4o"}}',
 "POST /v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}']
--- more_headers eval
["Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef", "Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef"]
--- error_code eval
[202, 429]
--- response_body_filters eval
Helix::per_request([sub { my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
       my $st = HelixPg::wait_sql("SELECT status FROM background_tasks WHERE id = '$id'", qr/completed|failed/);
       # the key has used both its requests: the POST and the task's call
       my ($code) = HelixPg::curl('POST', "$::Base/v1/chat/completions",
           '{"model": "gpt-4o", "messages": [{"role": "user", "content": "y"}]}',
           'Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef', 'Content-Type: application/json');
       "task $st, then $code" },
 sub { "" }])
--- response_body eval
["task completed, then 429", ""]



=== TEST 2: a forged internal header is no key, and says so in the log (info)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers
X-Helix-Internal: 00000000000000000000000000000000
--- request
POST /v1/chat/completions
{"model": "gpt-4o", "messages": [{"role": "user", "content": "forged"}]}
--- error_code: 401
--- error_log
X-Helix-Internal refused (not made here for this call)



=== TEST 3: a well-formed header with a made-up HMAC is refused, and X-Helix-Key-Name beside it is not believed
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers eval
"X-Helix-Internal: v1." . (time() + 60) . "." . ("ab" x 32) . "\nX-Helix-Key-Name: one"
--- request
POST /v1/chat/completions
{"model": "gpt-4o", "messages": [{"role": "user", "content": "forged hmac"}]}
--- error_code: 401
--- error_log
X-Helix-Internal refused (not made here for this call)



=== TEST 4: a genuine header seen on the loopback is good for its own call only, and not once it has expired
--- http_config eval: $::CaptureHttpConfig
--- config eval: $::Config
--- user_files eval: $::CaptureYaml
--- request eval
"POST /v1/tasks\n" . '{"type": "completion", "payload": {"prompt": "captured", "model": "gpt-4o"}}'
--- more_headers
Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef
--- error_code: 202
--- response_body_filters eval
sub { my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
      HelixPg::wait_sql("SELECT status FROM background_tasks WHERE id = '$id'", qr/completed|failed/);
      my $line = main::captured();
      my ($mac, $task, $name, $uri) = split /\|/, $line;
      my ($expiry) = $mac =~ /^v1\.(\d+)\.[0-9a-f]{64}$/ or return "not a v1 header: $line";
      my $body = '{"prompt": "replayed", "model": "gpt-4o"}';
      my @r;
      # the same call again, before it expires: that is the call it was made for
      push @r, main::replay($uri, $body, "X-Helix-Internal: $mac", "X-Helix-Task: $task", "X-Helix-Key-Name: $name");
      # another endpoint, another key, another task, no task
      push @r, main::replay('/v1/chat/completions', '{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}',
          "X-Helix-Internal: $mac", "X-Helix-Task: $task", "X-Helix-Key-Name: $name");
      push @r, main::replay($uri, $body, "X-Helix-Internal: $mac", "X-Helix-Task: $task", "X-Helix-Key-Name: two");
      push @r, main::replay($uri, $body, "X-Helix-Internal: $mac", "X-Helix-Task: task-other", "X-Helix-Key-Name: $name");
      push @r, main::replay($uri, $body, "X-Helix-Internal: $mac", "X-Helix-Key-Name: $name");
      # an address instead of the key: no key, and no address believed
      push @r, main::replay($uri, $body, "X-Helix-Internal: $mac", "X-Helix-Task: $task", "X-Helix-Client-Addr: 10.0.0.9");
      # until the clock is past the expiry the header names (a few seconds)
      select(undef, undef, undef, 0.2) while time() <= $expiry;
      push @r, main::replay($uri, $body, "X-Helix-Internal: $mac", "X-Helix-Task: $task", "X-Helix-Key-Name: $name");
      my $expired = Helix::log_count(qr/X-Helix-Internal refused \(expired\)/) ? "logged expired" : "no expired log";
      "task of $name on $uri: " . join(' ', @r) . ", $expired" }
--- response_body eval
"task of one on /v1/completions: 200 401 401 401 401 401 401, logged expired"
