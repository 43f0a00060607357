# POST /v1/embeddings/batch: texts sent in chunks of batch_size, chunks in
# parallel; each text cached under the key a single /v1/embeddings request
# for it uses, so cached texts are not sent again; input order kept.
use Test::Nginx::Socket 'no_plan';
use JSON::PP;
use HTTP::Tiny;
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<'_EOC_');
    location = /v1/embeddings/batch { helix_endpoint embeddings_batch; }
_EOC_

sub ebatch {
    my ($bs, @texts) = @_;
    my $t = join(', ', map { qq("$_") } @texts);
    return qq(POST /v1/embeddings/batch\n{"texts": [$t], "model": "text-embedding-3-small", "dimensions": 3, "batch_size": $bs});
}

sub single {
    my ($text) = @_;
    return qq(POST /v1/embeddings\n{"model": "text-embedding-3-small", "dimensions": 3, "input": "$text"});
}

# the vectors of a batch answer, kept to compare with single answers
our @Vectors;
sub keep_vectors {
    my $j = decode_json($_[0]);
    @Vectors = map { encode_json($_->{embedding}) } @{$j->{data}};
    return join(',', map { $_->{index} } @{$j->{data}}) . " usage $j->{usage}{prompt_tokens}";
}
sub same_vector {
    my ($i) = @_;
    return sub { my $j = decode_json($_[0]);
                 encode_json($j->{data}[0]{embedding}) eq $Vectors[$i] ? "same as [$i]" : "differs from [$i]: $_[0]" };
}

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

=== TEST 1: ceil(n/batch_size) provider calls, input order kept, usage summed, each text then a single-request hit
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers"
--- request eval
["POST /mock/reset",
 main::ebatch(2, "alpha text", "beta", "gamma text here", "delta", "epsilon"),
 "GET /mock/openai/stats",
 main::single("gamma text here"),
 "GET /mock/openai/stats"]
--- more_headers
Cache-Control: max-age=0
--- response_body_filters eval
Helix::per_request([undef, \&main::keep_vectors, undef, main::same_vector(2), undef])
--- response_body_like eval
["",
 '^0,1,2,3,4 usage \d+$',
 '"requests":\{"POST /v1/embeddings":3\},"total":3,',
 '^same as \[2\]$',
 '"total":3,']



=== TEST 2: the batch answer's shape: OpenAI's list, usage, and what was cached and sent
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers"
--- request eval
["POST /mock/reset", main::ebatch(10, "shape one", "shape two")]
--- response_body_like eval
["", '^\{"object":"list","data":\[\{"object":"embedding","index":0,"embedding":\[[-0-9.e]+,[-0-9.e]+,[-0-9.e]+\]\},\{"object":"embedding","index":1,"embedding":\[[^\]]+\]\}\],"model":"text-embedding-3-small","usage":\{"prompt_tokens":(\d+),"total_tokens":\1\},"batch":\{"texts":2,"cached":0,"sent":2,"provider_calls":1\}\}$']



=== TEST 3: texts cached before (by single requests) are not sent again: fewer calls
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers"
--- request eval
["POST /mock/reset",
 main::single("cached a"), main::single("cached b"),
 main::ebatch(2, "cached a", "fresh x", "cached b", "fresh y", "fresh z"),
 "GET /mock/openai/stats",
 main::ebatch(2, "cached a", "fresh x", "cached b", "fresh y", "fresh z"),
 "GET /mock/openai/stats"]
--- response_body_like eval
["", "", "",
 '"batch":\{"texts":5,"cached":2,"sent":3,"provider_calls":2\}',
 '"requests":\{"POST /v1/embeddings":4\},"total":4,',
 '"batch":\{"texts":5,"cached":5,"sent":0,"provider_calls":0\}',
 '"total":4,']



=== TEST 4: order kept when the first chunk is the slowest; each vector is its own text's
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers"
--- request eval
["POST /mock/reset",
 main::ebatch(1, "slow MOCK_LATENCY_MS:300", "quick b MOCK_LATENCY_MS:50", "quick c MOCK_LATENCY_MS:50"),
 "GET /mock/openai/stats",
 "POST /v1/embeddings\n" . '{"model": "text-embedding-3-small", "dimensions": 3, "input": "quick c MOCK_LATENCY_MS:50"}',
 "POST /v1/embeddings\n" . '{"model": "text-embedding-3-small", "dimensions": 3, "input": "slow MOCK_LATENCY_MS:300"}']
--- more_headers
Cache-Control: no-cache
--- response_body_filters eval
Helix::per_request([undef, \&main::keep_vectors, undef, main::same_vector(2), main::same_vector(0)])
--- response_body_like eval
["", '^0,1,2 usage', '"total":3,"inflight":0,"peak_inflight":3,', '^same as \[2\]$', '^same as \[0\]$']



=== TEST 5: repeated texts are sent once and answered at every place
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers"
--- request eval
["POST /mock/reset", main::ebatch(10, "again", "other", "again"), "GET /mock/openai/stats"]
--- response_body_filters eval
Helix::per_request([undef, sub { main::keep_vectors($_[0]); "$_[0] " . ($main::Vectors[0] eq $main::Vectors[2] ? "equal" : "differ") }, undef])
--- response_body_like eval
["", '"batch":\{"texts":3,"cached":0,"sent":2,"provider_calls":1\}\} equal$', '"total":1,.*"input":\["again","other"\]']



=== TEST 6: a failing chunk fails the batch, naming it; the other chunks' texts are cached
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers"
--- request eval
["POST /mock/reset",
 main::ebatch(2, "good one", "good two", "bad MOCK_STATUS:500", "good three"),
 main::single("good two"),
 "GET /mock/openai/stats"]
--- error_code eval: [200, 502, 200, 200]
--- response_body_like eval
["",
 '^\{"error":\{"message":"chunk 2 of 2 \(texts from 2\): all providers failed: openai \(HTTP 500: [^"]+\)","type":"api_error","param":null,"code":"provider_error"\}\}$',
 '"object":"list"',
 '"total":2,']



=== TEST 7: bad batches are 400s (404 for an unknown model) and reach no provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\nbatch:\n  max_texts: 3\n"
--- request eval
["POST /mock/reset",
 "POST /v1/embeddings/batch\n{\"model\": \"text-embedding-3-small\"}",
 "POST /v1/embeddings/batch\n{\"texts\": [\"a\", 3], \"model\": \"text-embedding-3-small\"}",
 "POST /v1/embeddings/batch\n{\"texts\": [\"a\"]}",
 "POST /v1/embeddings/batch\n{\"texts\": [\"a\"], \"model\": \"text-embedding-3-small\", \"batch_size\": 0}",
 "POST /v1/embeddings/batch\n{\"texts\": [\"a\", \"b\", \"c\", \"d\"], \"model\": \"text-embedding-3-small\"}",
 "POST /v1/embeddings/batch\n{\"texts\": [\"a\"], \"model\": \"no-such-model\"}",
 "POST /v1/embeddings/batch\n{\"texts\": [\"a\"], \"model\": \"text-embedding-3-small\", \"encoding_format\": \"base64\"}",
 "GET /mock/openai/stats"]
--- error_code eval: [200, 400, 400, 400, 400, 400, 404, 400, 200]
--- response_body_like eval
["",
 '"param":"texts","code":"missing_field"',
 '"message":"texts\[1\] must be a non-empty string"',
 '"param":"model","code":"missing_field"',
 '"param":"batch_size","code":"invalid_value"',
 '"message":"the batch has 4 texts, more than batch.max_texts \(3\); split it","type":"invalid_request_error","param":"texts","code":"batch_too_large"',
 '"message":"texts\[0\]: model \\\\"no-such-model\\\\" is not served by any configured provider',
 '"param":"encoding_format"',
 '"total":0,']



=== TEST 8: a client that goes away cuts the chunks in flight, gives every place back, leaves no text claimed
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\nbatch:\n  max_concurrent: 2\n"
--- request eval
["POST /mock/reset",
 main::ebatch(1, "gone a MOCK_LATENCY_MS:5000", "gone b MOCK_LATENCY_MS:5000", "gone c"),
 "GET /v1/health",
 "GET /mock/openai/stats",
 main::single("gone c"),
 "GET /mock/openai/stats"]
--- timeout: 0.5
--- abort
--- wait_for_log eval
[undef, undef, "client prematurely closed connection", undef, undef, undef]
--- response_body_filters eval
Helix::per_request([undef, undef, undef, sub { main::mock_stats_when($ENV{TEST_NGINX_OPENAI_PORT}, qr/"aborted":2,/) }, undef, undef])
--- response_headers eval
["", "", "", "", "X-Cache: MISS", ""]
--- response_body_like eval
["", "", '"inflight":0,"status":"ok"', '"total":2,"inflight":0,"peak_inflight":2,"aborted":2,', '"object":"list"', '"total":3,']
