# Rate limits global across nginx nodes: with Redis configured, every
# bucket lives in Redis and is updated by one Lua script (EVALSHA, EVAL
# when Redis lost it), so two nginx instances enforce one limit; while
# Redis does not answer, each node limits on its own shared memory.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Redis = $ENV{TEST_NGINX_REDIS_PORT};
our $Private = $Redis + 1;     # killed in a test: not the suite's one
our $Dir = "/tmp/helix-test-limits-redis-$$";

sub redis_cli { my ($port, @args) = @_; my $a = join ' ', map { "'$_'" } @args;
    my $out = `redis-cli -p $port $a 2>&1`; chomp $out; return $out; }

sub start_private {
    system("mkdir -p $Dir && redis-server --port $Private --bind 127.0.0.1 "
        . "--save '' --appendonly no --daemonize yes --dir $Dir --pidfile $Dir/redis.pid "
        . "--logfile $Dir/redis.log") == 0 or die "redis-server failed";
    for (1 .. 100) {
        last if redis_cli($Private, 'PING') eq 'PONG';
        select(undef, undef, undef, 0.05);
    }
}

sub stop_private {
    redis_cli($Private, 'SHUTDOWN', 'NOSAVE');
    for (1 .. 100) {
        last if redis_cli($Private, 'PING') =~ /refused/i;
        select(undef, undef, undef, 0.05);
    }
}

add_cleanup_handler(sub { stop_private(); system("rm -rf $Dir"); });

our $Second = "/tmp/helix-second-limits-$$";
add_cleanup_handler(sub { Helix::stop_nginx_in($Second); system("rm -rf $Second"); });

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
_EOC_

# keys are named per run: the suite's Redis outlives a test block
sub yaml {
    my ($n, $redis, $limits, $global) = @_;
    return ">>> helix.yaml\n$Helix::Providers" . <<"_EOY_";
redis:
  host: 127.0.0.1
  port: $redis
  pool:
    timeout: 500ms
auth:
  enabled: true
  keys:
    - name: small-$$-$n
      key: sk-small-0123456789abcdef0123456789abcdef
$limits
rate_limit:
  window: 1h
${\ ($global // '')}
_EOY_
}

sub chat { my ($c, $max) = @_; my $m = defined $max ? qq(, "max_tokens": $max) : '';
    return qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "$c"}]$m}); }

# one request with curl to a port: "status" plus the headers asked for
sub curl {
    my ($port, $body, @want) = @_;
    my $res = `curl -s -D - -o /dev/null -H 'Authorization: Bearer sk-small-0123456789abcdef0123456789abcdef' -H 'Content-Type: application/json' --data-binary '$body' http://127.0.0.1:$port/v1/chat/completions`;
    my ($status) = $res =~ m{^HTTP/\S+ (\d+)};
    my @out = ($status // '-');
    for my $h (@want) {
        my ($v) = $res =~ /^\Q$h\E: ([^\r\n]*)/mi;
        push @out, "$h=" . ($v // '-');
    }
    return join ' ', @out;
}

# a second nginx on the next port, same helix.yaml and Redis: n requests
sub second_node {
    my ($n) = @_;
    my $port = $Port + 1;
    my $dir = $Second;
    my $yaml = "$ENV{TEST_NGINX_SERVER_ROOT}/html/helix.yaml";
    system("mkdir -p $dir/conf $dir/logs");
    open my $fh, '>', "$dir/conf/nginx.conf" or die;
    print $fh "load_module $ENV{TEST_NGINX_LOAD_MODULES};\npid logs/nginx.pid;\n"
        . "error_log logs/error.log;\nevents {}\nhttp {\n"
        . "client_body_temp_path $dir/body;\nproxy_temp_path $dir/proxy;\n"
        . Helix::http_config(loopback => $port) =~ s{\.\./html/helix\.yaml}{$yaml}r
        . "server {\nlisten 127.0.0.1:$port;\n" . Helix::config() . "}\n}\n";
    close $fh;
    system("$ENV{TEST_NGINX_BINARY} -p $dir/ -c conf/nginx.conf") == 0
        or return "second node did not start";
    for (1 .. 100) {    # until it listens
        last if `curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$port/v1/health` eq '200';
        select(undef, undef, undef, 0.05);
    }
    my @r = map { curl($port, chat("second $_"), 'x-ratelimit-remaining-requests') } 1 .. $n;
    Helix::stop_nginx_in($dir, kill => 0);
    system("rm -rf $dir");
    return "second node: " . join(', ', @r);
}

sub fault { return "POST /mock/openai/faults\n" . ($_[0] // '{"latency_ms": 300, "count": 6}'); }

no_shuffle();
run_tests();

__DATA__

=== TEST 1: N of M concurrent requests pass, no more, counted in Redis
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(1, $::Redis, "      requests_per_minute: 3")
--- request eval
["POST /mock/reset", main::fault(), "GET /six"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" },
 sub { my $ok = () = $_[0] =~ /"object":"chat.completion"/g;
       my $no = () = $_[0] =~ /"code":"rate_limit_exceeded"/g;
       my $in = main::redis_cli($::Redis, 'EXISTS', "helix:rl:{k:small-$$-1}:r");
       "passed $ok, limited $no, in redis $in" }])
--- response_body eval
["", "", "passed 3, limited 3, in redis 1"]
--- no_error_log
[warn]



=== TEST 2: two nginx instances sharing Redis enforce one limit, not two
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(2, $::Redis, "      requests_per_minute: 3")
--- request eval
["POST /v1/chat/completions\n" . main::chat("first 1"), "POST /v1/chat/completions\n" . main::chat("first 2"),
 "GET /v1/health", "POST /v1/chat/completions\n" . main::chat("first 3")]
--- more_headers
Authorization: Bearer sk-small-0123456789abcdef0123456789abcdef
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub { main::second_node(2) }, sub { "" }])
--- response_body eval
["", "", "second node: 200 x-ratelimit-remaining-requests=0, 429 x-ratelimit-remaining-requests=0", ""]
--- error_code eval
[200, 200, 200, 429]
--- response_headers eval
["x-ratelimit-remaining-requests: 2", "x-ratelimit-remaining-requests: 1", "", "x-ratelimit-remaining-requests: 0"]



=== TEST 3: tokens through Redis: reserved, charged from usage, given back on failure
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(3, $::Redis, "      tokens_per_minute: 800")
--- request eval
["POST /mock/reset", main::fault('{"status": 500, "count": 1, "route": "/v1/chat"}'), "GET /v1/health"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub {
    # fails: 502, all back; then 500 + 2 reserved, usage charged; then
    # 500 + 2 more is beyond what is left only if usage was not charged
    my @r = map { main::curl($::Port, main::chat("refund", 500), 'x-ratelimit-remaining-tokens') } 1 .. 2;
    my $left = main::curl($::Port, main::chat("left", 100), 'x-ratelimit-remaining-tokens');
    join "\n", @r, $left =~ /^200 x-ratelimit-remaining-tokens=(\d+)$/ && $1 > 500 ? "usage charged" : $left }])
--- response_body eval
["", "", "502 x-ratelimit-remaining-tokens=298\n200 x-ratelimit-remaining-tokens=298\nusage charged"]
--- no_error_log
[warn]



=== TEST 4: Redis lost its scripts (restart, SCRIPT FLUSH): the script is sent again
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(4, $::Redis, "      requests_per_minute: 5")
--- more_headers
Authorization: Bearer sk-small-0123456789abcdef0123456789abcdef
--- request eval
["POST /v1/chat/completions\n" . main::chat("s1"), "POST /v1/chat/completions\n" . main::chat("s2")]
--- response_body_filters eval
Helix::per_request([sub { main::redis_cli($::Redis, 'SCRIPT', 'FLUSH') }, sub { "" }])
--- response_body eval
["OK", ""]
--- response_headers eval
["x-ratelimit-remaining-requests: 4", "x-ratelimit-remaining-requests: 3"]
--- no_error_log
[warn]



=== TEST 5: Redis killed: each node goes on limiting in its own shared memory
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::start_private(); main::yaml(5, $::Private, "      requests_per_minute: 2")
--- more_headers
Authorization: Bearer sk-small-0123456789abcdef0123456789abcdef
--- request eval
["POST /v1/chat/completions\n" . main::chat("k1"), "POST /v1/chat/completions\n" . main::chat("k2"),
 "POST /v1/chat/completions\n" . main::chat("k3"), "POST /v1/chat/completions\n" . main::chat("k4")]
--- response_body_filters eval
Helix::per_request([sub { my $in = main::redis_cli($::Private, 'EXISTS', "helix:rl:{k:small-$$-5}:r"); main::stop_private(); "in redis $in" },
 sub { "" }, sub { "" }, sub { "" }])
--- response_body eval
["in redis 1", "", "", ""]
--- error_code eval
[200, 200, 200, 429]
--- response_headers eval
["x-ratelimit-remaining-requests: 1", "x-ratelimit-remaining-requests: 1",
 "x-ratelimit-remaining-requests: 0", "x-ratelimit-remaining-requests: 0"]
--- error_log eval
qr/redis 127.0.0.1:\d+ unreachable/



=== TEST 6: rate_limit.global false: Redis configured, the limits stay local
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(6, $::Redis, "      requests_per_minute: 2", "  global: false")
--- more_headers
Authorization: Bearer sk-small-0123456789abcdef0123456789abcdef
--- request eval
["POST /v1/chat/completions\n" . main::chat("l1")]
--- response_body_filters eval
sub { "in redis " . main::redis_cli($::Redis, 'EXISTS', "helix:rl:{k:small-$$-6}:r") }
--- response_body: in redis 0



=== TEST 7: a Redis that never answers costs its timeout, then the local bucket decides
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(7, $ENV{TEST_NGINX_GEMINI_PORT}, "      requests_per_minute: 1") =~ s/timeout: 500ms/timeout: 300ms/r
--- more_headers
Authorization: Bearer sk-small-0123456789abcdef0123456789abcdef
--- request eval
["POST /v1/chat/completions\n" . main::chat("t1"), "POST /v1/chat/completions\n" . main::chat("t2")]
--- error_code eval
[200, 429]
--- error_log
redis did not answer within 300 ms
