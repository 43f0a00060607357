# POST /v1/ensemble/completions: the same prompt to up to max_providers
# providers at once, each alone (no fallback), within ensemble.timeout;
# the answer is chosen by ensemble.strategy and lists every provider's
# outcome.  The mock gives every provider the same text for the same
# prompt, so "majority" is decided by weights and order unless a
# provider fails.
use Test::Nginx::Socket 'no_plan';
use HTTP::Tiny;
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<'_EOC_');
    location = /v1/ensemble/completions { helix_endpoint ensemble; }
_EOC_

sub ens {
    my ($prompt, $extra) = @_;
    $extra = $extra ? ", $extra" : '';
    $extra = ", \"max_tokens\": 5$extra" unless $extra =~ /max_tokens/;
    return qq(POST /v1/ensemble/completions\n{"prompt": "$prompt", "model": "mock-shared"$extra});
}

sub fault { my ($p, $json) = @_; return "POST /mock/$p/faults\n$json"; }

sub yaml { return ">>> helix.yaml\n$Helix::Providers" . ($_[0] // ''); }

sub mock_stats_when {
    my ($port, $re) = @_;
    my $body = '';
    for (1 .. 250) {
        $body = HTTP::Tiny->new->get("http://127.0.0.1:$port/_mock/stats")->{content};
        return $body if $body =~ $re;
        select(undef, undef, undef, 0.02);
    }
    return $body;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: every provider answers: the chosen answer, its votes, every provider's outcome and latency
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset", main::ens("all agree"),
 "GET /mock/openai/stats", "GET /mock/claude/stats", "GET /mock/gemini/stats"]
--- response_headers eval
["", "X-Helix-Provider: openai", "", "", ""]
--- response_body_like eval
["",
 '^\{"id":"cmpl-[^"]+","object":"text_completion",.*"choices":\[\{"text":"Mock answer \w+ to: all",.*"ensemble":\{"strategy":"majority","providers":\[\{"provider":"openai","outcome":"ok","latency_ms":\d+\},\{"provider":"claude","outcome":"ok","latency_ms":\d+\},\{"provider":"gemini","outcome":"ok","latency_ms":\d+\}\],"chosen":"openai","votes":3\}\}$',
 '"total":1,', '"total":1,', '"total":1,']



=== TEST 2: ties go to the higher weight; the "weight" strategy; max_providers; a "providers" list
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\nproviders:\n  openai:\n    type: openai\n    models: [mock-shared]\n  claude:\n    type: anthropic\n    api_key: a\n    weight: 4\n    models: [mock-shared]\n  gemini:\n    type: gemini\n    api_key: g\n    models: [mock-shared]\n  mistral:\n    type: openai\n    weight: 9\n    models: [mock-shared]\nensemble:\n  max_providers: 3\n"
--- request eval
["POST /mock/reset",
 main::ens("weights"),
 main::ens("named", '"providers": ["gemini", "claude"]'),
 main::ens("unknown", '"providers": ["gemini", "nobody"]')]
--- error_code eval: [200, 200, 200, 404]
--- response_body_like eval
["",
 '"ensemble":\{"strategy":"majority","providers":\[\{"provider":"openai",[^}]+\},\{"provider":"claude",[^}]+\},\{"provider":"gemini",[^}]+\}\],"chosen":"claude","votes":3\}',
 '"ensemble":\{"strategy":"majority","providers":\[\{"provider":"gemini","outcome":"ok",[^}]+\},\{"provider":"claude","outcome":"ok",[^}]+\}\],"chosen":"claude","votes":2\}',
 '"message":"provider \\\\"nobody\\\\" is not configured",.*"code":"provider_not_found"']



=== TEST 3: strategy weight picks the heaviest provider that answered
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\nproviders:\n  openai:\n    type: openai\n    models: [mock-shared]\n  claude:\n    type: anthropic\n    api_key: a\n    weight: 5\n    models: [mock-shared]\n  gemini:\n    type: gemini\n    api_key: g\n    weight: 9\n    models: [mock-shared]\nensemble:\n  strategy: weight\n"
--- request eval
["POST /mock/reset", main::fault(gemini => '{"status": 500, "count": 1}'), main::ens("heaviest")]
--- response_body_like eval
["", "", '"ensemble":\{"strategy":"weight","providers":\[\{"provider":"openai","outcome":"ok",[^}]+\},\{"provider":"claude","outcome":"ok",[^}]+\},\{"provider":"gemini","outcome":"failed","latency_ms":\d+,"status":502,"error":\{"message":"all providers failed: gemini \(HTTP 500: [^"]+\)",[^}]+\}\}\],"chosen":"claude","votes":2\}']



=== TEST 4: fail_fast false: one slow and one failing provider, the answer comes from those that succeeded
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("ensemble:\n  fail_fast: false\n")
--- request eval
["POST /mock/reset",
 main::fault(claude => '{"latency_ms": 300, "count": 1}'),
 main::fault(gemini => '{"status": 503, "count": 1}'),
 main::ens("tolerant")]
--- response_headers eval
["", "", "", "X-Helix-Provider: openai"]
--- response_body_like eval
["", "", "",
 '"ensemble":\{"strategy":"majority","providers":\[\{"provider":"openai","outcome":"ok","latency_ms":\d+\},\{"provider":"claude","outcome":"ok","latency_ms":\d{3,}\},\{"provider":"gemini","outcome":"failed","latency_ms":\d+,"status":502,"error":\{[^}]+"code":"provider_error"\}\}\],"chosen":"openai","votes":2\}\}$']



=== TEST 5: fail_fast true: the first failure ends it, the slow calls are cut and their places given back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("ensemble:\n  fail_fast: true\n")
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"latency_ms": 5000, "count": 1}'),
 main::fault(claude => '{"latency_ms": 5000, "count": 1}'),
 main::fault(gemini => '{"status": 500, "count": 1}'),
 main::ens("fast failure"),
 "GET /v1/health",
 "GET /mock/claude/stats"]
--- error_code eval: [200, 200, 200, 200, 502, 200, 200]
--- response_body_filters eval
Helix::per_request([undef, undef, undef, undef, undef, undef, sub { main::mock_stats_when($ENV{TEST_NGINX_ANTHROPIC_PORT}, qr/"aborted":1,/) }])
--- response_body_like eval
["", "", "", "",
 '^\{"error":\{"message":"provider \\\\"gemini\\\\" failed and fail_fast is on: all providers failed: gemini \(HTTP 500: [^"]+\)","type":"api_error","param":null,"code":"ensemble_failed"\},"ensemble":\{"strategy":"majority","providers":\[\{"provider":"openai","outcome":"cancelled","latency_ms":\d+\},\{"provider":"claude","outcome":"cancelled","latency_ms":\d+\},\{"provider":"gemini","outcome":"failed","latency_ms":\d+,"status":502,"error":\{[^}]+\}\}\]\}\}$',
 '"inflight":0,"status":"ok"',
 '"total":1,"inflight":0,"peak_inflight":1,"aborted":1,']



=== TEST 6: the timeout cuts a straggler (its call is cancelled) and answers with the others
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("ensemble:\n  timeout: 300ms\n")
--- request eval
["POST /mock/reset",
 main::fault(gemini => '{"latency_ms": 5000, "count": 1}'),
 main::ens("straggler"),
 "GET /mock/gemini/stats",
 "GET /v1/health"]
--- response_body_filters eval
Helix::per_request([undef, undef, undef, sub { main::mock_stats_when($ENV{TEST_NGINX_GEMINI_PORT}, qr/"aborted":1,/) }, undef])
--- response_body_like eval
["", "",
 '"ensemble":\{"strategy":"majority","providers":\[\{"provider":"openai","outcome":"ok",[^}]+\},\{"provider":"claude","outcome":"ok",[^}]+\},\{"provider":"gemini","outcome":"timeout","latency_ms":\d+\}\],"chosen":"openai","votes":2\}\}$',
 '"total":1,"inflight":0,"peak_inflight":1,"aborted":1,',
 '"inflight":0,"status":"ok"']
--- error_log
helix: ensemble timed out, 1 of 3 providers still pending are cancelled



=== TEST 7: nobody in time is a 504 naming the timeout
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("ensemble:\n  timeout: 200ms\n")
--- request eval
["POST /mock/reset", main::ens("all too slow MOCK_LATENCY_MS:3000")]
--- error_code eval: [200, 504]
--- response_body_like eval
["", '^\{"error":\{"message":"no provider answered within the ensemble timeout \(200 ms\)","type":"api_error","param":null,"code":"ensemble_failed"\},"ensemble":\{"strategy":"majority","providers":\[\{"provider":"openai","outcome":"timeout",[^}]+\},\{"provider":"claude","outcome":"timeout",[^}]+\},\{"provider":"gemini","outcome":"timeout",[^}]+\}\]\}\}$']



=== TEST 8: parallel_execution false asks one provider after the other; with fail_fast the rest never start
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("ensemble:\n  parallel_execution: false\n  fail_fast: true\n")
--- request eval
["POST /mock/reset", main::fault(openai => '{"status": 500, "count": 1}'), main::ens("one by one"),
 "GET /mock/claude/stats"]
--- error_code eval: [200, 200, 502, 200]
--- response_body_like eval
["", "", '"providers":\[\{"provider":"openai","outcome":"failed",.*\},\{"provider":"claude","outcome":"not_started"\},\{"provider":"gemini","outcome":"not_started"\}\]\}\}$', '"total":0,']



=== TEST 9: a bad request is one 400, not one per provider; no provider serves the model: 404
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset",
 "POST /v1/ensemble/completions\n{\"model\": \"mock-shared\"}",
 "POST /v1/ensemble/completions\n{\"prompt\": \"x\", \"model\": \"nobody-serves-this\"}",
 "POST /v1/ensemble/completions\n{\"prompt\": \"x\", \"providers\": \"openai\"}",
 "GET /mock/openai/stats"]
--- error_code eval: [200, 400, 404, 400, 200]
--- response_body_like eval
["",
 '^\{"error":\{"message":"\\\\"prompt\\\\" must be a non-empty string","type":"invalid_request_error","param":"prompt","code":"missing_field"\}\}$',
 '"code":"model_not_found"',
 '"param":"providers","code":"invalid_type"',
 '"total":0,']



=== TEST 10: a client that goes away cancels every provider call and gives every place back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset",
 main::ens("abandoned MOCK_LATENCY_MS:5000"),
 "GET /v1/health",
 "GET /mock/gemini/stats"]
--- timeout: 0.5
--- abort
--- wait_for_log eval
[undef, undef, "client prematurely closed connection", undef]
--- response_body_filters eval
Helix::per_request([undef, undef, undef, sub { main::mock_stats_when($ENV{TEST_NGINX_GEMINI_PORT}, qr/"aborted":1,/) }])
--- response_body_like eval
["", "", '"inflight":0,"status":"ok"', '"total":1,"inflight":0,"peak_inflight":1,"aborted":1,']



=== TEST 11: majority: the text most providers gave wins over the first-listed provider's
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset", main::ens("split MOCK_DISSENT:openai", '"max_tokens": 3')]
--- response_headers eval
["", "X-Helix-Provider: claude"]
--- response_body_like eval
["", '"choices":\[\{"text":"Mock answer \w+",.*"chosen":"claude","votes":2\}\}$']



=== TEST 12: an unknown strategy fails nginx -t
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("ensemble:\n  strategy: confidence\n")
--- must_die
--- error_log
helix.yaml: ensemble.strategy: unknown strategy "confidence" (expected one of: majority, weight)
