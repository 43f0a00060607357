# The module's own requests to its endpoints (background tasks, cache
# warming) carry a secret made at start (X-Helix-Internal): with API keys
# required they still get through; a task posted with a key is made on
# that key's behalf and charged to it (t/066-task-keys.t has the rest);
# a client cannot forge the header.
use lib 't/lib';
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
[sub { my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
       my $st = HelixPg::wait_sql("SELECT status FROM background_tasks WHERE id = '$id'", qr/completed|failed/);
       # the key has used both its requests: the POST and the task's call
       my ($code) = HelixPg::curl('POST', "$::Base/v1/chat/completions",
           '{"model": "gpt-4o", "messages": [{"role": "user", "content": "y"}]}',
           'Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef', 'Content-Type: application/json');
       "task $st, then $code" },
 sub { "" }]
--- response_body eval
["task completed, then 429", ""]



=== TEST 2: a forged internal header is no key
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers
X-Helix-Internal: 00000000000000000000000000000000
--- request
POST /v1/chat/completions
{"model": "gpt-4o", "messages": [{"role": "user", "content": "forged"}]}
--- error_code: 401
