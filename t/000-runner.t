# Self-test of the bundled Test::Nginx::Socket runner (t/lib), using only
# stock nginx modules (no helix module is loaded here).
use strict;
use warnings;
use IO::Socket::INET;
use Test::Nginx::Socket 'no_plan';

# A "black hole" upstream: accepts TCP connections (kernel backlog) but never
# answers, for the client-abort test.
my $blackhole = IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.1',
                                      LocalPort => 0, Proto => 'tcp', ReuseAddr => 1)
    or die "cannot listen: $!";
$ENV{TEST_NGINX_BLACKHOLE_PORT} = $blackhole->sockport;
$ENV{TEST_NGINX_GREETING} = 'howdy';

repeat_each(1);
no_shuffle();
no_long_string();
no_root_location();
log_level('debug');
env_to_nginx('TEST_NGINX_GREETING');

our $HttpConfig = qq{
    map \$uri \$runner_map_test { default "mapped"; }
};

run_tests();

# hand-written usage of the helpers
ok(Test::Nginx::Socket::start_server(config => q{
    location /hw { return 201 "hand written $http_x_a\n"; }
}), 'start_server');
my $res = Test::Nginx::Socket::http_request('POST', '/hw', { 'X-A' => 'b' }, 'xyz');
is($res->{status}, 201, 'http_request status');
is($res->{body}, "hand written b\n", 'http_request body');
is($res->{headers}{'content-type'}, 'text/plain', 'http_request header');
Test::Nginx::Socket::stop_server();

__DATA__

=== TEST 1: plain return, exact body, headers
--- http_config eval: $::HttpConfig
--- config
    location /t {
        add_header X-Foo bar;
        return 200 "hello $runner_map_test\n";
    }
--- request
GET /t
--- response_body
hello mapped
--- response_headers
X-Foo: bar
Content-Type: text/plain
!X-Absent
--- response_headers_like
Content-Length: \d+
--- no_error_log
[error]
[warn]



=== TEST 2: response_body_like + 404
--- config
    location /t { return 404; }
--- request
GET /t
--- error_code: 404
--- response_body_like: ^<html>.*404 Not Found.*</html>\s*$



=== TEST 3: POST body echo, more_headers, $TEST_NGINX_ expansion in config
--- config
    location /echo {
        client_body_buffer_size 1m;
        proxy_set_header X-Body $request_body;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/dump;
    }
    location /dump {
        return 200 "len=$http_content_length body=$http_x_body foo=$http_x_foo\n";
    }
--- request
POST /echo
{"a":1}
--- more_headers
X-Foo: bar
Content-Type: application/json
--- response_body
len=7 body={"a":1} foo=bar
--- no_error_log
[error]



=== TEST 4: error_log / no_error_log
--- config
    location /missing { root html; }
--- request
GET /missing/nothing-here.txt
--- error_code: 404
--- error_log
open() "
No such file or directory
--- no_error_log
[alert]
[crit]



=== TEST 5: eval array of requests, eval-arrays of expectations
--- config
    location /a { return 200 "a\n"; }
    location /b { return 201 "b\n"; }
--- request eval
["GET /a", "POST /b\nsome body"]
--- error_code eval
[200, 201]
--- response_body eval
["a\n", "b\n"]
--- error_log eval
[qr/"GET \/a HTTP\/1\.1"/, qr/"POST \/b HTTP\/1\.1"/]



=== TEST 6: must_die on a broken config
--- config
    foo bar;
--- must_die
--- error_log
unknown directive "foo"



=== TEST 7: reload_user_files (config include changes between requests)
--- config
    location /r { include $TEST_NGINX_SERVER_ROOT/html/inc.conf; }
--- user_files
>>> inc.conf
return 200 "v1\n";
--- reload_user_files
>>> inc.conf
return 200 "v2\n";
--- request eval
["GET /r", "GET /r"]
--- response_body eval
["v1\n", "v2\n"]
--- no_error_log
[error]



=== TEST 8: reload rejected (broken file): old config keeps serving
--- config
    location /r { include $TEST_NGINX_SERVER_ROOT/html/inc.conf; }
--- user_files
>>> inc.conf
return 200 "v1\n";
--- reload_user_files
>>> inc.conf
garbage_directive on;
--- request eval
["GET /r", "GET /r"]
--- response_body eval
["v1\n", "v1\n"]
--- error_log
unknown directive "garbage_directive"



=== TEST 9: chunked response is de-chunked (sub_filter drops Content-Length)
--- config
    location /c {
        sub_filter_types text/plain;
        sub_filter_once off;
        sub_filter 'hello' 'HELLO';
        return 200 "hello world, hello again\n";
    }
--- request
GET /c
--- response_headers
Transfer-Encoding: chunked
!Content-Length
--- response_body
HELLO world, HELLO again



=== TEST 10: $TEST_NGINX_ expansion everywhere + env_to_nginx + user_files in subdirs
--- main_config
    # $TEST_NGINX_SERVROOT
--- config
    location /port {
        return 200 "port=$TEST_NGINX_SERVER_PORT greeting=${TEST_NGINX_GREETING}\n";
    }
--- user_files
>>> sub/dir/file.txt
static $TEST_NGINX_GREETING
--- request eval
["GET /port", "GET /sub/dir/file.txt"]
--- response_body eval
["port=$ENV{TEST_NGINX_SERVER_PORT} greeting=howdy\n", 'static $TEST_NGINX_GREETING' . "\n"]
--- error_code: 200



=== TEST 11: client abort with a short timeout does not fail
--- config
    location /hang {
        proxy_read_timeout 60s;
        proxy_pass http://127.0.0.1:$TEST_NGINX_BLACKHOLE_PORT;
    }
--- request
GET /hang
--- timeout: 0.5
--- abort
--- error_log
client prematurely closed connection



=== TEST 12: raw_request, HEAD, chomp filter and inline values
--- config
    location /h { return 200 "abc"; }
--- raw_request eval
"HEAD /h HTTP/1.0\r\nHost: x\r\n\r\n"
--- response_headers
Content-Length: 3
--- response_body chomp

--- no_error_log
[error]



=== TEST 13: block-level log_level and workers
--- main_config
--- log_level: info
--- workers: 2
--- config
    location /w { return 200 "pid ok\n"; }
--- request
GET /w
--- response_body
pid ok
--- no_error_log
[debug]



=== TEST 14: request split into packets, multi-line response_body_like
--- config
    location /echo {
        proxy_set_header X-Body $request_body;
        proxy_pass http://127.0.0.1:$TEST_NGINX_SERVER_PORT/dump;
    }
    location /dump {
        return 200 "len=$http_content_length body=$http_x_body\n";
    }
--- request eval
[["POST /echo\n{\"a\"", {value => ":1}", delay_before => 0.2}]]
--- response_body_like
^len=7 body=\{"a":1\}
--- response_body_unlike
nomatch
--- no_error_log
[error]
