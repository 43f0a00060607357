# Rate limits in shared memory: requests and tokens per client (API key,
# or address when auth is off), exact under concurrency, refilled over
# the window, tokens reserved from max_tokens and charged from the
# provider's usage, reservations given back by failed requests, OpenAI's
# x-ratelimit-* headers on every answer.  Concurrent requests come from
# SSI includes, which nginx runs in parallel.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $Port = $ENV{TEST_NGINX_SERVER_PORT};

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(cache => 0, extra => <<'_EOC_');
    location = /six {
        ssi on;
        ssi_types *;
        default_type text/plain;
        return 200 '<!--# include virtual="/one?1" -->|<!--# include virtual="/one?2" -->|<!--# include virtual="/one?3" -->|<!--# include virtual="/one?4" -->|<!--# include virtual="/one?5" -->|<!--# include virtual="/one?6" -->';
    }
    location = /one {
        proxy_pass http://127.0.0.1:$server_port/v1/chat/completions;
        proxy_method POST;
        proxy_set_header Content-Type application/json;
        proxy_set_header Authorization "Bearer sk-small-0123456789abcdef0123456789abcdef";
        proxy_set_body '{"model": "gpt-4o", "messages": [{"role": "user", "content": "in parallel"}]}';
    }
    location = /metrics { helix_endpoint metrics; }
    location = /v1/completions/batch { helix_endpoint completions_batch; }
_EOC_

sub yaml { return ">>> helix.yaml\n$Helix::Providers" . $_[0]; }

# one request with curl: "status" plus the headers asked for, "name=value"
sub curl {
    my ($body, $key, @want) = @_;
    my $auth = $key ? "-H 'Authorization: Bearer $key'" : '';
    my $res = `curl -s -D - -o /dev/null $auth -H 'Content-Type: application/json' --data-binary '$body' http://127.0.0.1:$Port/v1/chat/completions`;
    my ($status) = $res =~ m{^HTTP/\S+ (\d+)};
    my @out = ($status // '-');
    for my $h (@want) {
        my ($v) = $res =~ /^\Q$h\E: ([^\r\n]*)/mi;
        push @out, "$h=" . ($v // '-');
    }
    return join ' ', @out;
}

sub chat { my ($c, $max) = @_; my $m = defined $max ? qq(, "max_tokens": $max) : '';
    return qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "$c"}]$m}); }

# the next requests to the OpenAI mock: slow (so that they overlap) or failing
sub fault { my ($status) = @_;
    return "POST /mock/openai/faults\n" . ($status ? qq({"status": $status, "count": 1})
                                                  : '{"latency_ms": 300, "count": 6}'); }

no_shuffle();
run_tests();

__DATA__

=== TEST 1: N of M concurrent requests pass, no more (3 of 6)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(<<'_EOY_')
auth:
  enabled: true
  keys:
    - name: small
      key: sk-small-0123456789abcdef0123456789abcdef
      requests_per_minute: 3
rate_limit:
  window: 1h
_EOY_
--- request eval
["POST /mock/reset", main::fault(), "GET /six", "GET /metrics"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" },
 sub { my $ok = () = $_[0] =~ /"object":"chat.completion"/g;
       my $no = () = $_[0] =~ /"code":"rate_limit_exceeded"/g;
       "passed $ok, limited $no" },
 sub { join "\n", $_[0] =~ /^(helixagent_requests_rejected_total\{reason="rate_limit_\w+"\} \d+)$/mg }])
--- response_body eval
["", "", "passed 3, limited 3", qq(helixagent_requests_rejected_total{reason="rate_limit_requests"} 3\nhelixagent_requests_rejected_total{reason="rate_limit_tokens"} 0)]
--- no_error_log
[error]



=== TEST 2: headers on an answer: limits, what is left, when it is full again (Go durations)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(<<'_EOY_')
auth:
  enabled: true
  keys:
    - name: hdr
      key: sk-hdr-0123456789abcdef0123456789abcdef
      requests_per_minute: 5
      tokens_per_minute: 6000
_EOY_
--- more_headers
Authorization: Bearer sk-hdr-0123456789abcdef0123456789abcdef
--- request eval
"POST /v1/chat/completions\n" . main::chat("12345678", 98)
--- response_headers
x-ratelimit-limit-requests: 5
x-ratelimit-remaining-requests: 4
x-ratelimit-reset-requests: 12s
x-ratelimit-limit-tokens: 6000
x-ratelimit-remaining-tokens: 5900
x-ratelimit-reset-tokens: 1s
!Retry-After



=== TEST 3: over the limit: 429 with Retry-After, rate_limit_error, headers at 0
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(<<'_EOY_')
rate_limit:
  requests_per_minute: 2
_EOY_
--- request eval
["POST /v1/chat/completions\n" . main::chat("a"), "POST /v1/chat/completions\n" . main::chat("b"),
 "POST /v1/chat/completions\n" . main::chat("c")]
--- error_code eval
[200, 200, 429]
--- response_headers eval
["x-ratelimit-remaining-requests: 1", "x-ratelimit-remaining-requests: 0",
 "x-ratelimit-limit-requests: 2\nx-ratelimit-remaining-requests: 0\nRetry-After: 30\nContent-Type: application/json"]
--- response_body_like eval
["", "", '^\{"error":\{"message":"rate limit reached for requests \(2 per 60000 ms\) of a:127.0.0.1, try again in \d+ ms","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"\}\}$']



=== TEST 4: refill: after retry-after-ms the next request passes again, and only one
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(<<'_EOY_')
rate_limit:
  requests_per_minute: 2
  window: 2s
_EOY_
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    my @r = map { main::curl(main::chat("r$_"), undef, 'retry-after-ms') } 1 .. 3;
    my ($ms) = $r[2] =~ /retry-after-ms=(\d+)/;
    select(undef, undef, undef, ($ms // 0) / 1000 + 0.05);
    push @r, main::curl(main::chat("r4"), undef, 'retry-after-ms');
    push @r, main::curl(main::chat("r5"), undef, 'retry-after-ms');
    join "", map { s/ retry-after-ms=\d+/ wait/r . "\n" } @r;
}
--- response_body
200 retry-after-ms=-
200 retry-after-ms=-
429 wait
200 retry-after-ms=-
429 wait



=== TEST 5: tokens are charged from the provider's usage, not from max_tokens
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(<<'_EOY_')
auth:
  enabled: true
  keys:
    - name: tok
      key: sk-tok-0123456789abcdef0123456789abcdef
      tokens_per_minute: 1000
rate_limit:
  window: 1h
_EOY_
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    my $body = `curl -s -H 'Authorization: Bearer sk-tok-0123456789abcdef0123456789abcdef' -H 'Content-Type: application/json' --data-binary '${\ main::chat("usage", 500)}' http://127.0.0.1:$::Port/v1/chat/completions`;
    my ($used) = $body =~ /"total_tokens":(\d+)/;
    # max_tokens 500 again: passes only if about 500 - used came back
    my $r = main::curl(main::chat("usage", 500), 'sk-tok-0123456789abcdef0123456789abcdef', 'x-ratelimit-remaining-tokens');
    my ($left) = $r =~ /remaining-tokens=(\d+)/;
    my $expect = 1000 - $used - (500 + 2);
    ($used && $used < 100 && $r =~ /^200/ && $left == $expect)
        ? "charged from usage" : "used $used, then: $r (expected $expect left)";
}
--- response_body: charged from usage



=== TEST 6: a request the providers fail gives its reservation back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml\n" . <<'_EOY_'
providers:
  openai:
    type: openai
    models: [gpt-4o]
auth:
  enabled: true
  keys:
    - name: refund
      key: sk-refund-0123456789abcdef0123456789abcdef
      tokens_per_minute: 800
rate_limit:
  window: 1h
_EOY_
--- request eval
["POST /mock/reset", main::fault(500), "GET /v1/health"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" },
 sub { join "\n", map { main::curl(main::chat("refund $_", 500), 'sk-refund-0123456789abcdef0123456789abcdef', 'x-ratelimit-remaining-tokens') } 1 .. 2 }])
--- response_body eval
["", "", "502 x-ratelimit-remaining-tokens=298\n200 x-ratelimit-remaining-tokens=298"]



=== TEST 7: max_tokens beyond the token limit: 429 at once, the provider is not asked
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(<<'_EOY_')
rate_limit:
  tokens_per_minute: 100
_EOY_
--- request eval
["POST /mock/reset", "POST /v1/chat/completions\n" . main::chat("big", 200), "GET /mock/openai/stats"]
--- error_code eval
[200, 429, 200]
--- response_body_like eval
["", '"message":"request too large: it may use 201 tokens \(prompt and max_tokens\), the limit is 100 per 60000 ms"', '"total":0,']



=== TEST 8: an unlimited key gets no limit and no headers; other keys keep theirs
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(<<'_EOY_')
auth:
  enabled: true
  keys:
    - name: bench
      key: sk-bench-0123456789abcdef0123456789abcdef
      unlimited: true
    - name: other
      key: sk-other-0123456789abcdef0123456789abcdef
rate_limit:
  requests_per_minute: 1
_EOY_
--- more_headers eval
["Authorization: Bearer sk-bench-0123456789abcdef0123456789abcdef", "Authorization: Bearer sk-bench-0123456789abcdef0123456789abcdef", "Authorization: Bearer sk-bench-0123456789abcdef0123456789abcdef",
 "Authorization: Bearer sk-other-0123456789abcdef0123456789abcdef", "Authorization: Bearer sk-other-0123456789abcdef0123456789abcdef"]
--- request eval
[map { "POST /v1/chat/completions\n" . main::chat("u$_") } 1 .. 5]
--- error_code eval
[200, 200, 200, 200, 429]
--- response_headers eval
["!x-ratelimit-limit-requests", "!x-ratelimit-limit-requests", "!x-ratelimit-limit-requests",
 "x-ratelimit-limit-requests: 1", "x-ratelimit-limit-requests: 1"]



=== TEST 9: limits are per key: one key at its limit does not stop another
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(<<'_EOY_')
auth:
  enabled: true
  keys:
    - name: one
      key: sk-one-0123456789abcdef0123456789abcdef
      requests_per_minute: 1
    - name: two
      key: sk-two-0123456789abcdef0123456789abcdef
      requests_per_minute: 1
_EOY_
--- more_headers eval
["Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef", "Authorization: Bearer sk-one-0123456789abcdef0123456789abcdef", "x-api-key: sk-two-0123456789abcdef0123456789abcdef"]
--- request eval
[map { "POST /v1/chat/completions\n" . main::chat("k$_") } 1 .. 3]
--- error_code eval
[200, 429, 200]



=== TEST 10: a bad window fails nginx -t with the file and line
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml("rate_limit:\n  window: 0s\n")
--- must_die
--- error_log
rate_limit.window: must be longer than 0



=== TEST 11: auth off (the demo): anonymous clients limited per address, the bench key not at all
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(<<'_EOY_')
auth:
  enabled: false
  keys:
    - name: bench
      key: ${HELIX_TEST_NO_SUCH_VAR:-sk-helix-bench-0123456789abcdef0123456789abcdef}
      unlimited: true
rate_limit:
  requests_per_minute: 1
_EOY_
--- more_headers eval
["", "", "Authorization: Bearer sk-helix-bench-0123456789abcdef0123456789abcdef", "Authorization: Bearer sk-helix-bench-0123456789abcdef0123456789abcdef",
 "Authorization: Bearer sk-unknown"]
--- request eval
[map { "POST /v1/chat/completions\n" . main::chat("d$_") } 1 .. 5]
--- error_code eval
[200, 429, 200, 200, 429]



=== TEST 12: a client that goes away before the answer gives its reservation back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
">>> helix.yaml\n" . <<'_EOY_'
providers:
  openai:
    type: openai
    models: [gpt-4o]
auth:
  enabled: true
  keys:
    - name: gone
      key: sk-gone-0123456789abcdef0123456789abcdef
      tokens_per_minute: 800
rate_limit:
  window: 1h
_EOY_
--- more_headers
Authorization: Bearer sk-gone-0123456789abcdef0123456789abcdef
--- request eval
["POST /mock/reset", 'POST /mock/openai/faults
{"latency_ms": 20000, "count": 1}',
 "POST /v1/chat/completions\n" . main::chat("abandon", 500),
 "POST /v1/chat/completions\n" . main::chat("next", 500)]
--- timeout: 1
--- abort
--- wait_for_log eval
[undef, undef, undef, "client prematurely closed connection"]
--- error_code eval
[200, 200, undef, 200]
--- response_headers eval
["", "", "", "x-ratelimit-remaining-tokens: 299"]



=== TEST 13: a stream is charged from its usage too
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(<<'_EOY_')
auth:
  enabled: true
  keys:
    - name: stream
      key: sk-stream-0123456789abcdef0123456789abcdef
      tokens_per_minute: 1000
rate_limit:
  window: 1h
_EOY_
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    my $s = `curl -s -N -H 'Authorization: Bearer sk-stream-0123456789abcdef0123456789abcdef' -H 'Content-Type: application/json' --data-binary '{"model": "gpt-4o", "stream": true, "max_tokens": 500, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "stream"}]}' http://127.0.0.1:$::Port/v1/chat/completions`;
    my ($used) = $s =~ /"total_tokens":(\d+)/;
    # 500 + 2 again: fits only if the stream's 500 + 2 became its usage
    my $r = main::curl(main::chat("after", 500), 'sk-stream-0123456789abcdef0123456789abcdef', 'x-ratelimit-remaining-tokens');
    my ($left) = $r =~ /remaining-tokens=(\d+)/;
    ($s =~ /\[DONE\]/ && $used && $r =~ /^200/ && $left == 1000 - $used - 502)
        ? "stream charged" : "stream used " . ($used // '-') . ", then: $r";
}
--- response_body: stream charged



=== TEST 14: a batch takes one request and is charged its items' usage afterwards
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(<<'_EOY_')
auth:
  enabled: true
  keys:
    - name: batch
      key: sk-batch-0123456789abcdef0123456789abcdef
      requests_per_minute: 10
      tokens_per_minute: 1000
rate_limit:
  window: 1h
_EOY_
--- request eval
"GET /v1/health"
--- response_body_filters eval
sub {
    my $b = `curl -s -D - -H 'Authorization: Bearer sk-batch-0123456789abcdef0123456789abcdef' -H 'Content-Type: application/json' --data-binary '{"requests": [{"model": "gpt-4o", "prompt": "one", "max_tokens": 5}, {"model": "gpt-4o", "prompt": "two", "max_tokens": 5}]}' http://127.0.0.1:$::Port/v1/completions/batch`;
    my ($req) = $b =~ /x-ratelimit-remaining-requests: (\d+)/;
    my $used = 0;
    $used += $1 while $b =~ /"total_tokens":(\d+)/g;
    my $r = main::curl(main::chat("z", 1), 'sk-batch-0123456789abcdef0123456789abcdef', 'x-ratelimit-remaining-requests', 'x-ratelimit-remaining-tokens');
    my ($left) = $r =~ /remaining-tokens=(\d+)/;
    ($req == 9 && $used > 0 && $r =~ /^200 x-ratelimit-remaining-requests=8 / && $left == 1000 - $used - 2)
        ? "batch charged" : "batch: requests left $req, used $used; then: $r";
}
--- response_body: batch charged
