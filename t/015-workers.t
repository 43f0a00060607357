# Breakers and concurrency counters live in shared memory: every worker
# sees the same state.
use Test::Nginx::Socket 'no_plan';
use Helix;

master_on();
workers(2);

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(cache => 0);

our $Chat = 'POST /v1/chat/completions
{"model": "mock-shared", "messages": [{"role": "user", "content": "workers"}]}';

sub health {
    return `curl -s -m 2 http://127.0.0.1:$ENV{TEST_NGINX_SERVER_PORT}/v1/health`;
}

# a slow call in flight, its worker killed, then wait for the count to
# come back to zero (the signal), bounded
sub kill_worker_in_flight {
    my $port = $ENV{TEST_NGINX_SERVER_PORT};
    system("curl -s -m 10 -o /dev/null http://127.0.0.1:$port/v1/chat/completions "
        . q{-d '{"model": "mock-shared", "messages": [{"role": "user", "content": "crash"}]}' &});
    my $ok;
    for (1 .. 200) { last if ($ok = health() =~ /"inflight":1,/); select(undef, undef, undef, 0.05); }
    return "the call never started" unless $ok;
    open my $fh, '<', "$ENV{TEST_NGINX_SERVER_ROOT}/logs/nginx.pid" or return "no pid";
    my $master = <$fh>;
    chomp $master;
    system("pkill -KILL -P $master");
    for (1 .. 200) {
        return "released" if health() =~ /"inflight":0,/;
        select(undef, undef, undef, 0.05);
    }
    return "still in flight: " . health();
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a breaker opened by one worker is open in all of them
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    models: [mock-shared]
    circuit_breaker:
      failure_threshold: 1
      cooldown: 60s
--- request eval
["POST /mock/reset", "POST /mock/openai/faults\n" . '{"status": 500, "count": 1}', $::Chat, $::Chat, $::Chat, $::Chat, $::Chat, $::Chat, "GET /mock/openai/stats"]
--- error_code eval: [200, 200, 502, 503, 503, 503, 503, 503, 200]
--- response_body_like eval
["", "", "", "", "", "", "", "", '"total":1,']



=== TEST 2: the counters are back at zero, seen from every worker
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers"
--- request eval
["POST /mock/reset", $::Chat, $::Chat, $::Chat, $::Chat, "GET /v1/health", "GET /v1/health", "GET /v1/health"]
--- response_body_like eval
["", "", "", "", "", '"inflight":0,"status":"ok"', '"inflight":0,"status":"ok"', '"inflight":0,"status":"ok"']



=== TEST 3: a worker killed with a provider call in flight: the next worker gives its place back
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
["POST /mock/reset", "POST /mock/openai/faults\n" . '{"latency_ms": 4000, "count": 1}', "GET /v1/health"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, \&main::kill_worker_in_flight])
--- response_body eval
["", "", "released"]
--- error_log eval
[qr/releasing 1 provider calls of dead worker \d+/]
--- ignore_alerts
--- timeout: 20
