# Concurrency limits from the guide (providers.parallel.max_concurrent,
# per_provider, each provider's max_concurrent), counted in shared memory
# and given back on every exit path.  Concurrent requests come from SSI
# includes, which nginx runs in parallel.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(cache => 0, extra => <<'_EOC_');
    location = /two {
        ssi on;
        ssi_types *;
        default_type text/plain;
        return 200 '<!--# include virtual="/one?a" -->|<!--# include virtual="/one?b" -->';
    }
    location = /twenty {
        ssi on;
        ssi_types *;
        default_type text/plain;
        return 200 '<!--# include virtual="/one?1" -->|<!--# include virtual="/one?2" -->|<!--# include virtual="/one?3" -->|<!--# include virtual="/one?4" -->|<!--# include virtual="/one?5" -->|<!--# include virtual="/one?6" -->|<!--# include virtual="/one?7" -->|<!--# include virtual="/one?8" -->|<!--# include virtual="/one?9" -->|<!--# include virtual="/one?10" -->|<!--# include virtual="/one?11" -->|<!--# include virtual="/one?12" -->|<!--# include virtual="/one?13" -->|<!--# include virtual="/one?14" -->|<!--# include virtual="/one?15" -->|<!--# include virtual="/one?16" -->|<!--# include virtual="/one?17" -->|<!--# include virtual="/one?18" -->|<!--# include virtual="/one?19" -->|<!--# include virtual="/one?20" -->|';
    }
    location = /metrics { helix_endpoint metrics; }
    location = /three {
        ssi on;
        ssi_types *;
        default_type text/plain;
        return 200 '<!--# include virtual="/one?x" -->|<!--# include virtual="/one?y" -->|<!--# include virtual="/one?z" -->';
    }
    location = /one {
        proxy_pass http://127.0.0.1:$server_port/v1/chat/completions;
        proxy_method POST;
        proxy_set_header Content-Type application/json;
        proxy_set_body '{"model": "mock-shared", "messages": [{"role": "user", "content": "in parallel"}]}';
    }
_EOC_

sub fault { my ($p, $json) = @_; return "POST /mock/$p/faults\n$json"; }

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a provider at its max_concurrent passes the next request to the next provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    max_concurrent: 1
    models: [mock-shared]
  claude:
    type: anthropic
    api_key: a
    models: [mock-shared]
--- request eval
["POST /mock/reset", main::fault(openai => '{"latency_ms": 400, "count": 2}'), "GET /two",
 "GET /mock/openai/stats", "GET /mock/claude/stats", "GET /v1/health"]
--- response_body_like eval
["", "", '^\{"id".*"content":"Mock answer [^"]+".*\}\|\{"id".*"content":"Mock answer [^"]+".*\}$',
 '"total":1,', '"total":1,', '"inflight":0,"status":"ok"']



=== TEST 2: over the limit with no other provider and no wait (queue_size: 0): 503 with Retry-After
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  parallel:
    per_provider: 1
    queue_size: 0
  openai:
    type: openai
    models: [mock-shared]
--- request eval
["POST /mock/reset", main::fault(openai => '{"latency_ms": 400, "count": 2}'), "GET /two", "GET /v1/health"]
--- response_body_like eval
["", "", '"content":"Mock answer.*\|\{"error":\{"message":"no provider can take the request now: openai \(at its concurrency limit\)","type":"api_error","param":null,"code":"providers_unavailable"\}\}$',
 '"inflight":0,"status":"ok"']



=== TEST 3: the limit across all providers (parallel.max_concurrent)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  parallel:
    max_concurrent: 1
    queue_size: 0
  openai:
    type: openai
    models: [mock-shared]
  claude:
    type: anthropic
    api_key: a
    models: [mock-shared]
--- request eval
["POST /mock/reset", main::fault(openai => '{"latency_ms": 400, "count": 2}'), "GET /two", "GET /mock/claude/stats"]
--- response_body_like eval
["", "", '\|\{"error":\{"message":"no provider can take the request now: openai \(at its concurrency limit\); claude \(at its concurrency limit\)"', '"total":0,']



=== TEST 4: a client that goes away mid-call gives its place back and the call is cut
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    max_concurrent: 1
    models: [mock-shared]
--- request eval
["POST /mock/reset", main::fault(openai => '{"latency_ms": 5000, "count": 1}'),
 'POST /v1/chat/completions
{"model": "mock-shared", "messages": [{"role": "user", "content": "abandon"}]}',
 "GET /v1/health",
 'POST /v1/chat/completions
{"model": "mock-shared", "messages": [{"role": "user", "content": "next"}]}']
--- timeout: 0.5
--- abort
--- wait_for_log eval
[undef, undef, undef, "client prematurely closed connection", undef]
--- response_body_like eval
["", "", "", '"inflight":0,"status":"ok"', '"content":"Mock answer']



=== TEST 5: a timed-out call gives its place back at once
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    max_concurrent: 1
    timeout: 200ms
    models: [mock-shared]
--- request eval
["POST /mock/reset", main::fault(openai => '{"latency_ms": 3000, "count": 1}'),
 'POST /v1/chat/completions
{"model": "mock-shared", "messages": [{"role": "user", "content": "slow"}]}',
 "GET /v1/health",
 'POST /v1/chat/completions
{"model": "mock-shared", "messages": [{"role": "user", "content": "fast"}]}']
--- error_code eval: [200, 200, 504, 200, 200]
--- response_body_like eval
["", "", "", '"inflight":0,"status":"ok"', '"content":"Mock answer']



=== TEST 6: at the limit a request waits for a place (providers.parallel.queue_*) instead of a 503: 20 at once through 2 places, all served, never more than 2 at the provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  parallel:
    per_provider: 2
  openai:
    type: openai
    models: [mock-shared]
--- request eval
["POST /mock/reset", main::fault(openai => '{"latency_ms": 50}'), "GET /twenty",
 "GET /mock/openai/stats", "GET /metrics", "GET /v1/health"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub { my $n = () = $_[0] =~ /"content":"Mock answer/g; my $e = () = $_[0] =~ /"error"/g; "answers $n errors $e" },
 sub { my ($t) = $_[0] =~ /"total":(\d+)/; my ($p) = $_[0] =~ /"peak_inflight":(\d+)/; "total $t peak " . ($p <= 2 ? "at most 2" : $p) },
 sub { my %m = $_[0] =~ /^helixagent_provider_queue_(waiting|total\{outcome="\w+"\}) (\d+)$/mg; join " ", map { "$_=" . ($_ =~ /served/ ? ($m{$_} > 0 ? "some" : 0) : $m{$_}) } sort keys %m },
 sub { $_[0] =~ /"inflight":0,"status":"ok"/ ? "none in flight" : $_[0] }])
--- response_body eval
["", "", "answers 20 errors 0", "total 20 peak at most 2",
 'total{outcome="client_closed"}=0 total{outcome="full"}=0 total{outcome="served"}=some total{outcome="timeout"}=0 waiting=0',
 "none in flight"]



=== TEST 7: a wait longer than queue_timeout ends in a 503 with Retry-After; a full queue (queue_size) refuses at once
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  parallel:
    per_provider: 1
    queue_size: 1
    queue_timeout: 100ms
  openai:
    type: openai
    models: [mock-shared]
--- request eval
["POST /mock/reset", main::fault(openai => '{"latency_ms": 1500, "count": 1}'), "GET /three",
 "GET /metrics"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub { my $n = () = $_[0] =~ /"content":"Mock answer/g; my $e = () = $_[0] =~ /providers_unavailable/g; "answers $n unavailable $e" },
 sub { join "\n", grep { /^helixagent_provider_queue_total/ } split /\n/, $_[0] }])
--- response_body eval
["", "", "answers 1 unavailable 2",
 "helixagent_provider_queue_total{outcome=\"served\"} 0\nhelixagent_provider_queue_total{outcome=\"timeout\"} 1\nhelixagent_provider_queue_total{outcome=\"full\"} 1\nhelixagent_provider_queue_total{outcome=\"client_closed\"} 0"]
