# Budgets across nginx nodes: with Redis configured, the spend of a key
# (and its tenant) is checked and added by one Lua script, so two nginx
# instances enforce one budget, to the cent; while Redis does not
# answer, the node's own figure decides.  The spend API sums the
# completion log's costs.
use Test::Nginx::Socket 'no_plan';
use Helix;
use HelixPg;

HelixPg::reset();

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";
our $Redis = $ENV{TEST_NGINX_REDIS_PORT};
our $Private = $Redis + 2;     # killed in a test: not the suite's one
our $Dir = "/tmp/helix-test-budgets-redis-$$";
our $Admin = "admin-token-budgets-0123456789abcdef";

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

our $Second = "/tmp/helix-second-budgets-$$";
add_cleanup_handler(sub { Helix::stop_nginx_in($Second); system("rm -rf $Second"); });

our $Extra = <<'_EOC_';
    location = /v1/admin/spend { helix_endpoint spend; }
    location /v1/admin/keys/ { helix_endpoint admin_keys; }
_EOC_
our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => $Extra);

# keys are named per run: the suite's Redis outlives a test block
sub yaml {
    my ($n, $redis, $db) = @_;
    return ">>> helix.yaml\n$Helix::Providers" . <<"_EOY_" . ($db ? HelixPg::yaml() : '');
redis:
  host: 127.0.0.1
  port: $redis
  pool:
    timeout: 500ms
admin:
  token: $Admin
auth:
  enabled: true
  keys:
    - name: spender-$$-$n
      key: sk-spend-0123456789abcdef0123456789abcdef
      budget: {amount: 0.05, period: day}
pricing:
  currency: USD
  cost_header: true
  models:
    - model: mock-shared
      input: 0
      output: 2000
_EOY_
}

sub chat { my ($c) = @_;
    return qq({"model": "mock-shared", "max_tokens": 5, "messages": [{"role": "user", "content": "$c $$"}]}); }

# one request with curl to a port: "status remaining"
sub curl {
    my ($port, $body) = @_;
    my $res = `curl -s -D - -o /dev/null -H 'Authorization: Bearer sk-spend-0123456789abcdef0123456789abcdef' -H 'Cache-Control: no-cache' -H 'Content-Type: application/json' --data-binary '$body' http://127.0.0.1:$port/v1/chat/completions`;
    my ($status) = $res =~ m{^HTTP/\S+ (\d+)};
    my ($v) = $res =~ /^x-helix-budget-remaining: ([^\r\n]*)/mi;
    return ($status // '-') . " " . ($v // '-');
}

sub admin { my ($path) = @_; return `curl -s -H 'Authorization: Bearer $Admin' '$Base$path'`; }

# a second nginx on the next port, same helix.yaml and Redis
sub second_node {
    my (@bodies) = @_;
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
    my @r = map { curl($port, $_) } @bodies;
    Helix::stop_nginx_in($dir, kill => 0);
    system("rm -rf $dir");
    return join("\n", map { "second: $_" } @r);
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: two nginx nodes sharing Redis spend one budget, to the cent
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(1, $::Redis)
--- request
GET /v1/health
--- response_body_filters eval
sub {
    # each call: 5 tokens at 0.002 = 0.01, reserved and spent
    my @out = map { "first: " . main::curl($::Port, main::chat("a$_")) } 1 .. 2;
    push @out, main::second_node(map { main::chat("b$_") } 1 .. 2);
    push @out, map { "first: " . main::curl($::Port, main::chat("c$_")) } 1 .. 2;
    push @out, "redis " . main::redis_cli($::Redis, 'GET',
        "helix:budget:{spender-$$-1}:k:spender-$$-1:" . (time() - time() % 86400));
    my $k = main::admin("/v1/admin/keys/spender-$$-1");
    push @out, "admin " . join ' ', $k =~ /"(spent|remaining|period|resets_at)":"([^"]*)"/g;
    join("\n", @out) . "\n";
}
--- response_body_like
^first: 200 0.040000
first: 200 0.030000
second: 200 0.020000
second: 200 0.010000
first: 200 0.000000
first: 429 0.000000
redis 50000
admin (?:\w+ \S+ ?){4}$
--- no_error_log
[warn]



=== TEST 2: the admin sees the spend, the remaining and the reset; unknown keys are 404
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(1, $::Redis)
--- request
GET /v1/health
--- response_body_filters eval
sub {
    my $k = main::admin("/v1/admin/keys/spender-$$-1");
    my %h = $k =~ /"(spent|remaining|period|scope)":"([^"]*)"/g;
    my $none = main::admin("/v1/admin/keys/nobody");
    "spent $h{spent} remaining $h{remaining} period $h{period} scope $h{scope}\n"
        . "nobody " . ($none =~ /"code":"(\w+)"/)[0] . "\n";
}
--- response_body
spent 0.050000 remaining 0.000000 period day scope key
nobody key_not_found



=== TEST 3: Redis killed: this node's own figure decides (it had Redis's figure)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::start_private(); main::yaml(3, $::Private)
--- request
GET /v1/health
--- response_body_filters eval
sub {
    my @out = map { main::curl($::Port, main::chat("r$_")) } 1 .. 2;
    push @out, "in redis " . main::redis_cli($::Private, 'GET',
        "helix:budget:{spender-$$-3}:k:spender-$$-3:" . (time() - time() % 86400));
    main::stop_private();
    push @out, map { main::curl($::Port, main::chat("l$_")) } 1 .. 4;
    join("\n", @out) . "\n";
}
--- response_body
200 0.040000
200 0.030000
in redis 20000
200 0.020000
200 0.010000
200 0.000000
429 0.000000
--- error_log eval
qr/redis 127.0.0.1:\d+ unreachable/



=== TEST 4: the spend API's sums are the completion log's, by model and by key; bad arguments are 400
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml(4, $::Redis, 1)
--- request
GET /v1/health
--- response_body_filters eval
sub {
    my @out = map { main::curl($::Port, main::chat("log$_")) } 1 .. 3;
    my $key = "spender-$$-4";
    HelixPg::wait_sql("SELECT count(*) FROM completions WHERE api_key_name = '$key'", qr/^3$/);
    my $db = HelixPg::psql("SELECT sum(cost), count(cost) FROM completions WHERE api_key_name = '$key'");
    my $s = main::admin("/v1/admin/spend?key=$key&group_by=model&from=2000-01-01");
    my ($groups) = $s =~ /"groups":\[(.*)\]/;
    (my $top = $s) =~ s/"groups":\[.*?\]//;
    my ($micro) = $top =~ /"cost_micro":(\d+)/;
    push @out, "log $db", "api $micro", "groups $groups";
    $s = main::admin("/v1/admin/spend?group_by=key&to=2000-01-01");
    push @out, "before 2000 " . ($s =~ /"requests":(\d+)/)[0];
    my $bad = main::admin("/v1/admin/spend?group_by=colour");
    push @out, "bad " . ($bad =~ /"param":"(\w+)"/)[0];
    $bad = main::admin("/v1/admin/spend?from=yesterday");
    push @out, "bad " . ($bad =~ /"param":"(\w+)"/)[0];
    join("\n", @out) . "\n";
}
--- response_body_like
^200 0.040000
200 0.030000
200 0.020000
log 30000\|3
api 30000
groups \{"name":"mock-shared","requests":3,"cost":"0.030000","cost_micro":30000,"priced_requests":3,"prompt_tokens":\d+,"completion_tokens":15\}
before 2000 0
bad group_by
bad from
$
