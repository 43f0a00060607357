# POST /v1/completions/batch: every item through the single completion's
# path (cache, fallback, limits), at most max_concurrent at a time, the
# answer in request order.  Per-item latency and failures come from
# MOCK_LATENCY_MS:n / MOCK_STATUS:n in the prompt (util/README.mock.md);
# the mock reports its peak number of requests in flight.
use Test::Nginx::Socket 'no_plan';
use HTTP::Tiny;
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<'_EOC_');
    location = /v1/completions/batch { helix_endpoint completions_batch; }
_EOC_

# a batch of {"prompt": p, "max_tokens": 5}: the answer text is
# "Mock answer <hash> to: <first word of p>"
sub batch {
    my ($opts, @prompts) = @_;
    my $items = join(', ', map { /^[{"]/ ? $_ : qq({"prompt": "$_", "max_tokens": 5}) } @prompts);
    $opts = $opts ? qq(, "batch_options": $opts) : '';
    return qq(POST /v1/completions/batch\n{"requests": [$items]$opts});
}

sub fault { my ($p, $json) = @_; return "POST /mock/$p/faults\n$json"; }

# the mock's stats once they match (the mock notices a closed connection
# on its own time): a signal, not a sleep
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

=== TEST 1: answers keep request order when later items finish first
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers"
--- request eval
["POST /mock/reset",
 main::batch('{"parallel": true, "max_concurrent": 3}',
             "first MOCK_LATENCY_MS:400", "second MOCK_LATENCY_MS:200", "third"),
 "GET /mock/openai/stats"]
--- response_body_like eval
["",
 '^\{"object":"batch","results":\[\{"index":0,"status":200,"provider":"openai","cache":"MISS","response":\{"id":"cmpl-[^"]+","object":"text_completion",.*"text":"Mock answer \w+ to: first",[^\]]*\]\,"usage":\{[^}]*\}\}\},\{"index":1,"status":200,.*"text":"Mock answer \w+ to: second".*\},\{"index":2,"status":200,.*"text":"Mock answer \w+ to: third".*\}\],"summary":\{"total":3,"succeeded":3,"failed":0,"max_concurrent":3\}\}$',
 '"total":3,"inflight":0,"peak_inflight":3,']



=== TEST 2: max_concurrent is never exceeded (the mock's peak), parallel false is one at a time
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers"
--- request eval
["POST /mock/reset",
 main::batch('{"max_concurrent": 2}', map { "two at a time $_ MOCK_LATENCY_MS:60" } 1 .. 8),
 "GET /mock/openai/stats",
 "POST /mock/reset",
 main::batch('{"parallel": false, "max_concurrent": 5}', map { "one at a time $_ MOCK_LATENCY_MS:40" } 1 .. 4),
 "GET /mock/openai/stats"]
--- response_body_like eval
["",
 '"summary":\{"total":8,"succeeded":8,"failed":0,"max_concurrent":2\}',
 '"total":8,"inflight":0,"peak_inflight":2,',
 "",
 '"summary":\{"total":4,"succeeded":4,"failed":0,"max_concurrent":1\}',
 '"total":4,"inflight":0,"peak_inflight":1,']



=== TEST 3: batch.max_concurrent in helix.yaml is the ceiling for what a client asks
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\nbatch:\n  max_concurrent: 3\n"
--- request eval
["POST /mock/reset",
 main::batch('{"max_concurrent": 50}', map { "ceiling $_ MOCK_LATENCY_MS:60" } 1 .. 9),
 "GET /mock/openai/stats"]
--- response_body_like eval
["",
 '"summary":\{"total":9,"succeeded":9,"failed":0,"max_concurrent":3\}',
 '"total":9,"inflight":0,"peak_inflight":3,']



=== TEST 4: a provider's max_concurrent bounds the batch too: items wait, none fails
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    max_concurrent: 2
    models: [gpt-4o]
--- request eval
["POST /mock/reset",
 main::batch('{"max_concurrent": 5}', map { qq({"prompt": "provider bound $_ MOCK_LATENCY_MS:80", "model": "gpt-4o"}) } 1 .. 7),
 "GET /mock/openai/stats", "GET /v1/health"]
--- response_body_like eval
["",
 '"summary":\{"total":7,"succeeded":7,"failed":0,"max_concurrent":5\}',
 '"total":7,"inflight":0,"peak_inflight":2,',
 '"inflight":0,"status":"ok"']



=== TEST 5: one item failing fails only itself: provider 4xx, every provider 5xx (after fallback), bad item
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers"
--- request eval
["POST /mock/reset",
 main::batch('{"max_concurrent": 4}',
             "fine", "refused MOCK_STATUS:400", "broken MOCK_STATUS:503",
             '{"prompt": ""}', '"not an object"', '{"prompt": "streamed", "stream": true}', "also fine"),
 "GET /mock/claude/stats"]
--- response_body_like eval
["",
 '^\{"object":"batch","results":\[\{"index":0,"status":200,.*"text":"Mock answer \w+ to: fine".*\},\{"index":1,"status":400,"error":\{"message":"provider \\\\"openai\\\\": mock_provider injected error \(status 400\)","type":"invalid_request_error","param":null,"code":"provider_error"\}\},\{"index":2,"status":502,"error":\{"message":"all providers failed: openai \(HTTP 503: mock_provider injected error \(status 503\)\); claude \(HTTP 503: [^;]*\); gemini \(HTTP 503: [^"]*\)","type":"api_error","param":null,"code":"provider_error"\}\},\{"index":3,"status":400,"error":\{"message":"\\\\"prompt\\\\" must be a non-empty string","type":"invalid_request_error","param":"prompt","code":"invalid_type"\}\},\{"index":4,"status":400,"error":\{"message":"each request must be a JSON object","type":"invalid_request_error","param":null,"code":"invalid_type"\}\},\{"index":5,"status":501,"error":\{[^}]*"code":"streaming_not_implemented"\}\},\{"index":6,"status":200,.*"text":"Mock answer \w+ to: also".*\}\],"summary":\{"total":7,"succeeded":2,"failed":5,"max_concurrent":4\}\}$',
 '"total":1,']



=== TEST 6: the batch size is capped by batch.max_requests with a clear 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\nbatch:\n  max_requests: 2\n"
--- request eval
["POST /mock/reset", main::batch('', "a", "b", "c"), "GET /mock/openai/stats"]
--- error_code eval: [200, 400, 200]
--- response_body_like eval
["",
 '^\{"error":\{"message":"the batch has 3 requests, more than batch.max_requests \(2\); split it","type":"invalid_request_error","param":"requests","code":"batch_too_large"\}\}$',
 '"total":0,']



=== TEST 7: malformed batches are 400s naming the field
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers"
--- request eval
["POST /v1/completions/batch\n{\"requests\": []}",
 "POST /v1/completions/batch\n{\"prompt\": \"x\"}",
 "POST /v1/completions/batch\n{\"requests\": [{\"prompt\": \"x\"}], \"batch_options\": {\"max_concurrent\": 0}}",
 "POST /v1/completions/batch\n{\"requests\": [{\"prompt\": \"x\"}], \"batch_options\": {\"parallel\": \"yes\"}}",
 "POST /v1/completions/batch\n{\"requests\": [{\"prompt\": \"x\"}], \"batch_options\": 3}",
 "POST /v1/completions/batch\n[1, 2]",
 "POST /v1/completions/batch\n{\"requests\": [",
 "GET /v1/completions/batch"]
--- error_code eval: [400, 400, 400, 400, 400, 400, 400, 405]
--- response_body_like eval
['"param":"requests","code":"invalid_type"',
 '"param":"requests","code":"missing_field"',
 '"param":"batch_options.max_concurrent","code":"invalid_value"',
 '"param":"batch_options.parallel","code":"invalid_type"',
 '"param":"batch_options","code":"invalid_type"',
 '"message":"request body must be a JSON object"',
 '"code":"invalid_json"',
 '"code":"method_not_allowed"']



=== TEST 8: items are cached like single completions; identical items in flight make one call
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers"
--- request eval
["POST /mock/reset",
 main::batch('{"max_concurrent": 3}', "same MOCK_LATENCY_MS:100", "same MOCK_LATENCY_MS:100", "other"),
 "GET /mock/openai/stats",
 main::batch('', "same MOCK_LATENCY_MS:100", "other"),
 "POST /v1/completions\n{\"prompt\": \"other\", \"max_tokens\": 5}",
 "GET /mock/openai/stats"]
--- response_body_like eval
["",
 '^\{"object":"batch","results":\[\{"index":0,"status":200,"provider":"openai","cache":"MISS",.*\{"index":1,"status":200,"provider":"openai","cache":"HIT","cache_tier":"L1",.*\{"index":2,"status":200,"provider":"openai","cache":"MISS",.*"succeeded":3,',
 '"total":2,',
 '^\{"object":"batch","results":\[\{"index":0,"status":200,"provider":"openai","cache":"HIT","cache_tier":"L1",.*\{"index":1,"status":200,"provider":"openai","cache":"HIT","cache_tier":"L1",.*"succeeded":2,',
 '"text":"Mock answer \w+ to: other"',
 '"total":2,']



=== TEST 9: a client that goes away stops the batch: queued items never start, calls are cut, places given back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    max_concurrent: 2
    models: [gpt-4o]
--- request eval
["POST /mock/reset",
 main::batch('{"max_concurrent": 2}', map { qq({"prompt": "abandoned $_ MOCK_LATENCY_MS:5000", "model": "gpt-4o"}) } 1 .. 5),
 "GET /v1/health",
 "GET /mock/openai/stats",
 main::batch('', qq({"prompt": "next", "model": "gpt-4o"}))]
--- timeout: 0.5
--- abort
--- wait_for_log eval
[undef, undef, "client prematurely closed connection", undef, undef]
--- response_body_filters eval
Helix::per_request([undef, undef, undef, sub { main::mock_stats_when($ENV{TEST_NGINX_OPENAI_PORT}, qr/"aborted":2,/) }, undef])
--- response_body_like eval
["", "", '"inflight":0,"status":"ok"', '"total":2,"inflight":0,"peak_inflight":2,"aborted":2,', '"succeeded":1,']
