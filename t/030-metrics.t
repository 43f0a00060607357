# GET /metrics: Prometheus text, summed over workers from shared memory,
# moving by exactly what the requests did; promtool accepts the output
# and the alert rules; a reload keeps the values.
use Test::Nginx::Socket 'no_plan';
use HTTP::Tiny;
use Helix;

master_on();
workers(2);

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => "    location = /metrics { helix_endpoint metrics; }\n");
our $Yaml = ">>> helix.yaml\n$Helix::Providers";

sub chat {
    my ($content) = @_;
    return "POST /v1/chat/completions\n"
        . qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "$content"}]});
}

# /metrics once it shows what is expected, or its last answer: a worker
# counts a request in its log phase, after the answer has gone, so the
# other worker may answer /metrics a moment before that
sub metrics_when {
    my ($re) = @_;
    my $m = '';
    for (1 .. 200) {
        $m = HTTP::Tiny->new->get("http://127.0.0.1:$ENV{TEST_NGINX_SERVER_PORT}/metrics")->{content};
        return $m if $m =~ /$re/s;
        select(undef, undef, undef, 0.05);
    }
    return $m;
}

our $T1 = 'helixagent_request_duration_seconds_count\{endpoint="chat_completions",status="2xx"\} 3\n.*'
 . 'helixagent_request_duration_seconds_count\{endpoint="chat_completions",status="4xx"\} 1\n.*'
 . 'helixagent_request_size_bytes_count\{endpoint="chat_completions"\} 4\n.*'
 . 'helixagent_response_size_bytes_count\{endpoint="chat_completions"\} 4\n.*'
 . 'helixagent_cache_hits_total\{tier="l1",policy="completions"\} 1\n'
 . '.*helixagent_cache_misses_total\{tier="l1",policy="completions"\} 2\n'
 . '.*helixagent_cache_entries\{tier="l1"\} 2\n'
 . '.*helixagent_provider_latency_seconds_count\{provider="openai"\} 2\n'
 . '.*helixagent_provider_tokens_total\{provider="openai",kind="prompt"\} [1-9]\d*\n'
 . 'helixagent_provider_tokens_total\{provider="openai",kind="completion"\} 60\n'
 . '.*helixagent_provider_circuit_state\{provider="openai"\} 0\n'
 . '.*helixagent_provider_inflight\{provider="openai"\} 0\n'
 . '.*nginx_connections\{state="active"\} [1-9]'
 . '.*process_cpu_seconds_total [0-9.]+\n.*process_resident_memory_bytes [1-9]\d+\n';

our $T5 = 'helixagent_request_duration_seconds_count\{endpoint="chat_completions",status="2xx"\} 1\n';

# promtool's verdict on the text exposition format
sub promtool_metrics {
    my ($body) = @_;
    open my $fh, '|-', 'promtool check metrics > /tmp/helix-promtool.out 2>&1'
        or return "no promtool: $!";
    print $fh $body;
    close $fh;
    my $rc = $?;
    open my $in, '<', '/tmp/helix-promtool.out';
    my $out = do { local $/; <$in> } // '';
    return $rc == 0 ? "promtool: ok" : "promtool failed: $out";
}

sub promtool_rules {
    my $out = `promtool check rules conf/prometheus/alerts.yml 2>&1`;
    return $? == 0 ? "rules: ok" : "promtool rules failed: $out";
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: counters and histograms move by exactly what the requests did
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", main::chat("m1"), main::chat("m2"), main::chat("m1"),
 "POST /v1/chat/completions\n{bad json", "GET /metrics"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub { "" }, sub { "" }, sub { "" }, sub { main::metrics_when($::T1) }])
--- response_body_like eval
["", "", "", "", "", $::T1]
--- error_code eval: [200, 200, 200, 200, 400, 200]
--- response_headers eval
["", "", "", "", "", "Content-Type: text/plain; version=0.0.4"]



=== TEST 2: provider errors are counted by reason
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", "POST /mock/openai/faults\n" . '{"status": 500, "count": 1}',
 "POST /mock/claude/faults\n" . '{"status": 429, "count": 1}',
 'POST /v1/chat/completions
{"model": "mock-shared", "messages": [{"role": "user", "content": "errors"}]}',
 "GET /metrics"]
--- response_body_like eval
["", "", "", "", 'helixagent_provider_latency_seconds_count\{provider="gemini"\} 1\n.*helixagent_provider_errors_total\{provider="openai",reason="status_5xx"\} 1\n.*helixagent_provider_errors_total\{provider="claude",reason="rate_limited"\} 1\n']



=== TEST 3: promtool accepts the output
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[main::chat("p1"), main::chat("p1"), "GET /metrics"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, \&main::promtool_metrics])
--- response_body eval
["", "", "promtool: ok"]



=== TEST 4: promtool accepts the alert rules in conf/
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
GET /metrics
--- response_body_filters eval
\&main::promtool_rules
--- response_body: rules: ok



=== TEST 5: a reload keeps the values
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- reload_user_files eval: $::Yaml
--- request eval
[main::chat("r1"), "GET /metrics"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { main::metrics_when($::T5) }])
--- response_body_like eval
["", $::T5]



=== TEST 6: metrics off: no /metrics
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\nmetrics:\n  enabled: false\n"
--- request
GET /metrics
--- error_code: 404
--- response_body_like: "code":"metrics_disabled"
