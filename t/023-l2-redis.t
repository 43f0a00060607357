# L2 against Redis as a user sees it: TTLs, db selection, AUTH, corrupted
# values, a pattern clear seen by redis-cli, Redis killed and back.  A
# private password-protected redis-server is started here, on the port
# after the suite's one.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $Port = $ENV{TEST_NGINX_REDIS_PORT};
our $AuthPort = $Port + 1;
our $Dir = "/tmp/helix-test-redis-$$";

sub redis_cli { my ($port, @args) = @_; my $a = join ' ', map { "'$_'" } @args;
    my $out = `redis-cli -p $port $a 2>&1`; chomp $out; return $out; }

# the store into Redis follows the answer: wait for it, do not race it
sub wait_keys {
    my ($port, @args) = @_;
    my $pattern = pop @args;
    for (1 .. 200) {
        my $k = redis_cli($port, @args, '--scan', '--pattern', $pattern);
        return $k if $k =~ /\S/;
        select(undef, undef, undef, 0.05);
    }
    return '';
}

sub start_auth_redis {
    system("mkdir -p $Dir && redis-server --port $AuthPort --bind 127.0.0.1 --requirepass s3cret "
        . "--save '' --appendonly no --daemonize yes --dir $Dir --pidfile $Dir/redis.pid "
        . "--logfile $Dir/redis.log") == 0 or die "redis-server failed";
    for (1 .. 100) {    # until it answers
        last if redis_cli($AuthPort, '-a', 's3cret', '--no-auth-warning', 'PING') eq 'PONG';
        select(undef, undef, undef, 0.05);
    }
}

sub stop_auth_redis {
    redis_cli($AuthPort, '-a', 's3cret', '--no-auth-warning', 'SHUTDOWN', 'NOSAVE');
    for (1 .. 100) {    # until it is gone
        last if redis_cli($AuthPort, 'PING') =~ /refused/i;
        select(undef, undef, undef, 0.05);
    }
}

start_auth_redis();
add_cleanup_handler(sub { stop_auth_redis(); system("rm -rf $Dir"); });

our $Second = "/tmp/helix-second-$$";
add_cleanup_handler(sub { Helix::stop_nginx_in($Second); system("rm -rf $Second"); });

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => "    location = /v1/admin/cache/clear { helix_endpoint cache_clear; }\n");

our $Key = "completion:openai:gpt-4o:*";

sub yaml {
    my ($redis) = @_;
    return ">>> helix.yaml\n$Helix::Providers\nadmin:\n  token: adm1n-0123456789abcdef0123456789abcdef\ncache:\n  l2:\n    enabled: true\n"
        . "  policies:\n    completions:\n      ttl: 90s\n$redis";
}

sub chat {
    my ($c) = @_;
    return "POST /v1/chat/completions\n"
        . qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "$c $$"}]});
}

# a second nginx on the next port, same helix.yaml and Redis: one request
sub second_node {
    my ($req) = @_;
    main::wait_keys($Port, 'completion:openai:gpt-4o:*');
    my $port = $ENV{TEST_NGINX_SERVER_PORT} + 1;
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
    my $res;
    for (1 .. 100) {    # until it answers
        my ($line, $body) = split /\n/, $req, 2;
        my (undef, $uri) = split / /, $line;
        $res = `curl -s -D - -o /dev/null -X POST --data-binary '$body' http://127.0.0.1:$port$uri 2>/dev/null`;
        last if $res =~ /^HTTP/;
        select(undef, undef, undef, 0.05);
    }
    Helix::stop_nginx_in($dir, kill => 0);
    system("rm -rf $dir");
    my ($xc) = $res =~ /^X-Cache: (\w+)/mi;
    my ($tier) = $res =~ /^X-Cache-Tier: (\w+)/mi;
    return "second node: " . ($xc // '-') . " " . ($tier // '-');
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the Redis key has the policy's TTL, in the configured db
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("redis:\n  host: 127.0.0.1\n  port: $::Port\n  db: 3\n")
--- request eval
[main::chat("ttl")]
--- response_body_filters eval
sub { my @k = split /\n/, main::wait_keys($::Port, '-n', 3, "completion:openai:gpt-4o:*");
      my $ttl = main::redis_cli($::Port, '-n', 3, 'PTTL', $k[0]);
      my $in0 = main::redis_cli($::Port, '-n', 0, 'EXISTS', $k[0]);
      (@k && $ttl > 80000 && $ttl <= 90000 && $in0 eq '0') ? "ttl ok" : "keys @k ttl $ttl db0 $in0" }
--- response_body: ttl ok



=== TEST 2: a corrupted value in Redis ...
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("redis:\n  host: 127.0.0.1\n  port: $::Port\n")
--- request eval
["GET /v1/models", main::chat("corrupt")]
--- response_body_filters eval
Helix::per_request([sub { main::redis_cli($::Port, 'DEL', $_) for split /\n/, main::redis_cli($::Port, '--scan', '--pattern', "completion:openai:gpt-4o:*"); "" },
 sub { my @k = grep { /gpt-4o/ } split /\n/, main::wait_keys($::Port, "completion:openai:gpt-4o:*");
       main::redis_cli($::Port, 'SET', $_, "H1\x06garbage") for @k; "corrupted " . scalar(@k) }])
--- response_body_like eval
["", '^corrupted 1$']



=== TEST 2b: ... is a miss for a new nginx, not a 5xx, and is deleted
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("redis:\n  host: 127.0.0.1\n  port: $::Port\n")
--- request eval
[main::chat("corrupt")]
--- response_headers
X-Cache: MISS
--- response_body_like: "object":"chat.completion"
--- error_log
undecodable L2 value
--- no_error_log
[alert]



=== TEST 3: a pattern clear leaves no matching key in Redis (as redis-cli sees it)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("redis:\n  host: 127.0.0.1\n  port: $::Port\n")
--- more_headers eval
["", "", "Authorization: Bearer adm1n-0123456789abcdef0123456789abcdef"]
--- request eval
["GET /v1/models", main::chat("clear me"), "POST /v1/admin/cache/clear\n" . '{"pattern": "completion:openai:*"}']
--- response_body_filters eval
Helix::per_request([sub { main::redis_cli($::Port, 'DEL', $_) for split /\n/, main::redis_cli($::Port, '--scan', '--pattern', "completion:openai:*"); "" },
 sub { main::wait_keys($::Port, 'completion:openai:*'); "" }, sub { my $left = main::redis_cli($::Port, '--scan', '--pattern', 'completion:openai:*');
                   ($_[0] =~ /"l2":[1-9]/ && $left eq '') ? "cleared" : "left: [$left] answer: $_[0]" }])
--- response_body eval
["", "", "cleared"]



=== TEST 4: AUTH: with the password L2 works, the key is in the protected Redis
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("redis:\n  host: 127.0.0.1\n  port: $::AuthPort\n  password: s3cret\n")
--- request eval
[main::chat("auth"), main::chat("auth")]
--- response_body_filters eval
Helix::per_request([sub { my $k = main::wait_keys($::AuthPort, '-a', 's3cret', '--no-auth-warning', 'completion:*'); $k =~ /gpt-4o/ ? "stored" : "not stored: $k" }, sub { "" }])
--- response_body eval
["stored", ""]
--- no_error_log
NOAUTH



=== TEST 5: Redis killed mid-run: answers go on; Redis back: L2 is used again
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("redis:\n  host: 127.0.0.1\n  port: $::AuthPort\n  password: s3cret\n  pool:\n    timeout: 500ms\n")
--- request eval
[main::chat("before kill"),
 main::chat("while dead"),
 [{ value => main::chat("after restart"), delay_before => 5.5 }],
 main::chat("after restart 2")]
--- response_body_filters eval
Helix::per_request([sub { main::stop_auth_redis(); "killed" },
 sub { main::start_auth_redis(); $_[0] =~ /chat.completion/ ? "answered while dead" : $_[0] },
 sub { "" },
 sub { my $k = main::wait_keys($::AuthPort, '-a', 's3cret', '--no-auth-warning', 'completion:*');
       $k =~ /gpt-4o/ ? "stored again" : "not stored: $k" }])
--- response_body eval
["killed", "answered while dead", "", "stored again"]
--- error_log eval
[qr/redis 127.0.0.1:\d+ unreachable/, qr/answers again, L2 is back/]
--- timeout: 10



=== TEST 6: two nginx instances share L2: one fills it, the other hits, the provider is asked once
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("redis:\n  host: 127.0.0.1\n  port: $::Port\n")
--- request eval
["POST /mock/reset", main::chat("two nodes"), "GET /mock/openai/stats"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { main::second_node(main::chat("two nodes")) }, sub { $_[0] =~ /"total":1,/ ? "one call" : $_[0] }])
--- response_body eval
["", "second node: HIT L2", "one call"]



=== TEST 6: a value whose provider is not the one its key names is never served (no header of Redis's choosing)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("redis:\n  host: 127.0.0.1\n  port: $::Port\n")
--- request eval
["GET /v1/models", main::chat("provider swap")]
--- response_body_filters eval
Helix::per_request([sub { main::redis_cli($::Port, 'DEL', $_) for split /\n/, main::redis_cli($::Port, '--scan', '--pattern', "completion:openai:gpt-4o:*"); "" },
 sub { my @k = grep { /gpt-4o/ } split /\n/, main::wait_keys($::Port, "completion:openai:gpt-4o:*");
       my $v = main::redis_cli($::Port, 'GET', $k[0]);
       $v =~ s/^H1\x06openai/H1\x0dX-Injected: 1/ or return "not an H1 value: $v";
       open my $fh, '|-', "redis-cli -p $::Port -x SET '$k[0]' >/dev/null" or die; print $fh $v; close $fh;
       "swapped " . scalar(@k) }])
--- response_body_like eval
["", '^swapped 1$']



=== TEST 6b: ... a new nginx misses, deletes it, and sends no such header
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("redis:\n  host: 127.0.0.1\n  port: $::Port\n")
--- request eval
[main::chat("provider swap")]
--- response_headers
X-Cache: MISS
X-Injected:
--- response_body_like: "object":"chat.completion"
--- error_log
undecodable L2 value



=== TEST 7: cache.l2.secret: values carry a MAC ("H2"), and a new nginx with the same secret is served from L2
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("redis:\n  host: 127.0.0.1\n  port: $::Port\n") =~ s/  l2:\n    enabled: true\n/  l2:\n    enabled: true\n    secret: l2-secret-0123456789abcdef0123456789\n/r
--- request eval
["GET /v1/models", main::chat("signed"), main::chat("signed")]
--- response_body_filters eval
Helix::per_request([sub { main::redis_cli($::Port, 'DEL', $_) for split /\n/, main::redis_cli($::Port, '--scan', '--pattern', "completion:openai:gpt-4o:*"); "" },
 sub { my @k = grep { /gpt-4o/ } split /\n/, main::wait_keys($::Port, "completion:openai:gpt-4o:*");
       my $v = main::redis_cli($::Port, 'GET', $k[0]); $v =~ /^H2/ ? "signed" : "not signed: " . substr($v, 0, 8) },
 sub { "" }])
--- response_body eval
["", "signed", ""]



=== TEST 7b: ... same secret: an L2 hit
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("redis:\n  host: 127.0.0.1\n  port: $::Port\n") =~ s/  l2:\n    enabled: true\n/  l2:\n    enabled: true\n    secret: l2-secret-0123456789abcdef0123456789\n/r
--- request eval
[main::chat("signed")]
--- response_headers
X-Cache: HIT
X-Cache-Tier: L2
--- no_error_log
undecodable



=== TEST 7c: ... another secret (whoever wrote Redis without it): never served, deleted, a miss
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("redis:\n  host: 127.0.0.1\n  port: $::Port\n") =~ s/  l2:\n    enabled: true\n/  l2:\n    enabled: true\n    secret: other-secret-0123456789abcdef01234567\n/r
--- request eval
[main::chat("signed")]
--- response_headers
X-Cache: MISS
--- error_log
undecodable L2 value



=== TEST 7d: cache.l2.secret shorter than 32 characters fails nginx -t
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("redis:\n  host: 127.0.0.1\n  port: $::Port\n") =~ s/  l2:\n    enabled: true\n/  l2:\n    enabled: true\n    secret: short\n/r
--- must_die
--- error_log eval
qr/cache\.l2\.secret: too short/
