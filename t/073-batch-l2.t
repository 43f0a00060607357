# Batches with L2 (the suite's Redis): items and texts are looked up in
# Redis like single requests (asynchronously, many at once), stored there,
# and a new nginx (empty L1) answers a repeated batch from L2.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<'_EOC_');
    location = /v1/completions/batch { helix_endpoint completions_batch; }
    location = /v1/embeddings/batch { helix_endpoint embeddings_batch; }
_EOC_

our $Yaml = ">>> helix.yaml\n$Helix::Providers" . <<"_EOC_";
cache:
  l2:
    enabled: true
    host: 127.0.0.1:$ENV{TEST_NGINX_REDIS_PORT}
_EOC_

# unique per run: the suite's Redis lives as long as the run
our $Batch = "POST /v1/completions/batch\n"
    . qq({"requests": [{"prompt": "l2 batch $$ one", "model": "gpt-4o"}, {"prompt": "l2 batch $$ two", "model": "gpt-4o"}, {"prompt": "l2 batch $$ three", "model": "gpt-4o"}]});

sub texts { return join(', ', map { qq("l2 text $$ $_") } @_); }
sub ebatch { return "POST /v1/embeddings/batch\n"
    . qq({"texts": [) . texts(@_) . qq(], "model": "text-embedding-3-small", "dimensions": 3, "batch_size": 2}); }

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a batch's items are stored in L1 and L2
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", $::Batch, $::Batch, "GET /mock/openai/stats"]
--- response_body_like eval
["", '"cache":"MISS".*"cache":"MISS".*"cache":"MISS".*"succeeded":3,',
 '"cache":"HIT","cache_tier":"L1".*"cache":"HIT","cache_tier":"L1".*"cache":"HIT","cache_tier":"L1".*"succeeded":3,',
 '"total":3,']
--- no_error_log
[error]



=== TEST 2: a new nginx (empty L1) answers the same batch from L2, no provider asked
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", $::Batch, "GET /mock/openai/stats"]
--- response_body_like eval
["", '^\{"object":"batch","results":\[\{"index":0,"status":200,"provider":"openai","cache":"HIT","cache_tier":"L2",.*"text":"Mock answer \w+ to: l2 batch \d+ one.*"cache":"HIT","cache_tier":"L2".*"cache":"HIT","cache_tier":"L2".*"succeeded":3,',
 '"total":0,']
--- no_error_log
[error]



=== TEST 3: embeddings texts are stored per text in L2
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", main::ebatch(1, 2, 3), "GET /mock/openai/stats"]
--- response_body_like eval
["", '"batch":\{"texts":3,"cached":0,"sent":3,"provider_calls":2\}', '"total":2,']
--- no_error_log
[error]



=== TEST 4: a new nginx finds those texts in L2 and sends only the new ones
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", main::ebatch(4, 1, 2, 5, 3), "GET /mock/openai/stats",
 "POST /v1/embeddings\n" . qq({"model": "text-embedding-3-small", "dimensions": 3, "input": "l2 text $$ 2"})]
--- response_headers eval
["", "", "", "X-Cache: HIT\nX-Cache-Tier: L1"]
--- response_body_like eval
["", '"index":4,.*"batch":\{"texts":5,"cached":3,"sent":2,"provider_calls":1\}',
 '"total":1,.*"input":\["l2 text \d+ 4","l2 text \d+ 5"\]', '"object":"list"']
--- no_error_log
[error]
