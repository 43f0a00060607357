# Self-test of the bundled runner: make sure failures are really reported
# (no false passes).  Runs an inner test script whose blocks are expected to
# fail and inspects its TAP output.  Also unit-tests the HTTP parser.
# Uses only stock nginx modules.
use strict;
use warnings;
use lib 't/lib';
use Test::More;
use File::Temp qw(tempdir);
use Test::Nginx::HTTP;

# ---------------------------------------------------------------- parser
{
    my $p = \&Test::Nginx::HTTP::parse_response;

    my $r = $p->("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nx-a: 2\r\n\r\n"
                 . "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nTrailer: x\r\n\r\n", 0, 1);
    ok($r->{complete}, 'chunked: complete');
    is($r->{body}, 'hello, world', 'chunked: de-chunked body');
    is_deeply($r->{chunks}, ['hello', ', world'], 'chunked: chunk list');
    is($r->{headers}{'x-a'}, '1, 2', 'repeated headers joined');

    $r = $p->("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", 0, 1);
    ok(!$r->{complete} && $r->{incomplete}, 'chunked: missing last chunk detected');
    is($r->{body}, 'hello', 'chunked: partial body kept');

    $r = $p->("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 0, 1);
    like($r->{incomplete} // '', qr/truncated/, 'content-length: truncation detected');

    $r = $p->("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", 0, 0);
    is($r->{status}, 201, '100-continue skipped');
    ok($r->{complete}, 'content-length: complete without EOF');

    $r = $p->("HTTP/1.0 200 OK\r\nX-Folded: a\r\n  b\r\n\r\nuntil close", 0, 0);
    ok(!$r->{complete}, 'no framing: incomplete before EOF');
    $r = $p->("HTTP/1.0 200 OK\r\nX-Folded: a\r\n  b\r\n\r\nuntil close", 0, 1);
    ok($r->{complete}, 'no framing: complete at EOF');
    is($r->{headers}{'x-folded'}, 'a b', 'folded header');
    is($r->{body}, 'until close', 'body until close');
}

# ---------------------------------------------------------------- runner
my $dir = tempdir(CLEANUP => 1);
my $inner = "$dir/inner.t";
open my $fh, '>', $inner or die $!;
print $fh <<'INNER';
use strict;
use warnings;
use lib 't/lib';
use IO::Socket::INET;
use POSIX ();
use Test::Nginx::Socket 'no_plan';

my $blackhole = IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.1',
                                      LocalPort => 0, Proto => 'tcp', ReuseAddr => 1)
    or die "cannot listen: $!";
$ENV{TEST_NGINX_BLACKHOLE_PORT} = $blackhole->sockport;

master_on();
workers(1);

# crash helper: once block H wrote its marker file, SIGSEGV the worker
my $watcher = fork;
if (defined $watcher && $watcher == 0) {
    my $marker = "$ENV{TEST_NGINX_HTML_DIR}/crash_me";
    my $pidf = "$ENV{TEST_NGINX_SERVROOT}/logs/nginx.pid";
    for (1 .. 6000) {
        if (-e $marker && -s $pidf) {
            open my $p, '<', $pidf;
            my $m = <$p>; close $p;
            $m =~ s/\s+//g;
            my @kids;
            for my $s (glob '/proc/[0-9]*/stat') {
                open my $f, '<', $s or next;
                my $l = <$f>; close $f;
                push @kids, $1 if $l && $l =~ /^(\d+) \(.*\) \S (\d+)/s && $2 == $m;
            }
            if (@kids) { kill 'SEGV', @kids; POSIX::_exit(0) }
        }
        select(undef, undef, undef, 0.02);
    }
    POSIX::_exit(0);
}

run_tests();
kill 'KILL', $watcher if $watcher;
waitpid($watcher, 0) if $watcher;

__DATA__

=== A: wrong body
--- config
    location /t { return 200 "y\n"; }
--- request
GET /t
--- response_body
x

=== B: wrong status
--- config
    location /t { return 200 "y\n"; }
--- request
GET /t
--- error_code: 201

=== C: wrong and unexpected headers
--- config
    location /t { add_header X-Foo bar; return 200 "y\n"; }
--- request
GET /t
--- response_headers
X-Foo: baz
!X-Foo

=== D: missing error_log pattern
--- config
    location /t { return 200 "y\n"; }
--- request
GET /t
--- timeout: 1
--- error_log
this text is never logged

=== E: no_error_log hit
--- config
    location /t { root html; }
--- request
GET /t/missing.txt
--- error_code: 404
--- no_error_log
[error]

=== F: request timeout without abort
--- config
    location /hang { proxy_pass http://127.0.0.1:$TEST_NGINX_BLACKHOLE_PORT; }
--- request
GET /hang
--- timeout: 0.5
--- ignore_response

=== G: unexpected [emerg] from a rejected reload
--- config
    location /r { include $TEST_NGINX_HTML_DIR/inc.conf; }
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

=== H: worker crash
--- config
    location /t { return 200 "y\n"; }
--- user_files
>>> crash_me
1
--- request
GET /t
--- wait: 1
--- error_log
exited on signal 11

=== I: must_die but nginx starts fine
--- config
    location /t { return 200 "y\n"; }
--- must_die

=== J: nginx fails to start
--- config
    no_such_directive 1;
--- request
GET /t

=== K: eval error
--- config
    location /t { return 200 "y\n"; }
--- request
GET /t
--- response_body eval
[1,

=== L: passing control block
--- config
    location /t { return 200 "y\n"; }
--- request
GET /t
--- response_body
y
--- no_error_log
[error]
INNER
close $fh;

# under AddressSanitizer (make test-asan) block H's SIGSEGV must still
# kill the worker as it does without, and is no report of a bug
my $out = do {
    local $ENV{ASAN_OPTIONS} = ($ENV{ASAN_OPTIONS} // '') . ':handle_segv=0';
    local $ENV{TEST_NGINX_ASAN_LOGS};
    delete $ENV{TEST_NGINX_ASAN_LOGS};
    `$^X -I t/lib $inner 2>&1`;
};
my %st;
for my $l (split /\n/, $out) {
    next unless $l =~ /^(not ok|ok) \d+ - (.*)$/;
    my ($s, $d) = ($1, $2);
    $st{$d} = $s eq 'ok' ? ($st{$d} // 'ok') : 'not ok';
}

sub expect {
    my ($re, $want, $what) = @_;
    my @m = grep { /$re/ } keys %st;
    if (!@m) {
        fail("$what: no assertion matching /$re/");
        return;
    }
    my $got = (grep { $st{$_} eq 'not ok' } @m) ? 'not ok' : 'ok';
    is($got, $want, $what);
}

expect(qr/^A: wrong body - response_body/,          'not ok', 'wrong body detected');
expect(qr/^B: wrong status - status code/,          'not ok', 'wrong status detected');
expect(qr/^C: .* - header X-Foo ok/,                'not ok', 'wrong header value detected');
expect(qr/^C: .* - header X-Foo not present/,       'not ok', 'unexpected header detected');
expect(qr/^D: .* should exist in error.log/,         'not ok', 'missing error_log pattern detected');
expect(qr/^E: .* "\[error\]" should not exist/,      'not ok', 'no_error_log hit detected');
expect(qr/^F: .* timed out/,                         'not ok', 'timeout without abort detected');
expect(qr/^G: .* response_body .*\(req 1\)/,         'ok',     'rejected reload keeps old config');
expect(qr/^G: .* \[alert\]\/\[emerg\]/,              'not ok', 'unexpected [emerg] detected');
expect(qr/^H: .* \[alert\]\/\[emerg\]\/crash/,       'not ok', 'worker crash detected');
expect(qr/^I: .* die as expected/,                  'not ok', 'must_die violation detected');
expect(qr/^J: .* nginx failed to start/,            'not ok', 'start failure detected');
expect(qr/^K: .* eval error/,                       'not ok', 'eval error detected');
expect(qr/^L: passing control block - status/,      'ok',     'control block status passes');
expect(qr/^L: passing control block - response_body/, 'ok',   'control block body passes');
expect(qr/^L: .* should not exist/,                 'ok',     'control block no_error_log passes');

diag($out) unless Test::More->builder->is_passing;

# ------------------------------------------------ ASan reports, cleanup
# a report written during a block fails it; a test file that dies still
# runs its cleanup handlers (a second nginx must not outlive it)
my $asan = "$dir/asan";
mkdir $asan or die $!;
my $inner2 = "$dir/inner2.t";
open $fh, '>', $inner2 or die $!;
print $fh <<'INNER';
use strict;
use warnings;
use lib 't/lib';
use Test::Nginx::Socket 'no_plan';

add_cleanup_handler(sub {
    open my $m, '>', "$ENV{TEST_NGINX_ASAN_LOGS}/../cleaned" or die; close $m;
});
run_tests();

__DATA__

=== M: an ASan report appears
--- config
    location /t { return 200 "y\n"; }
--- request
GET /t
--- response_body_filters eval
sub { open my $f, '>', "$ENV{TEST_NGINX_ASAN_LOGS}/asan.4242" or die;
      print $f "==4242==ERROR: AddressSanitizer: heap-use-after-free\n";
      close $f; $_[0] }
--- response_body
y

=== N: the test file dies half-way
--- config
    location /t { return 200 "y\n"; }
--- request
GET /t
--- response_body_filters eval
sub { die "dying half-way\n" }
--- response_body
y
INNER
close $fh;

$out = `TEST_NGINX_ASAN_LOGS=$asan $^X -I t/lib $inner2 2>&1`;
like($out, qr/^not ok \d+ - M: .* - AddressSanitizer: \S+asan\.4242$/m,
     'an ASan report fails the block');
like($out, qr/heap-use-after-free/, 'the ASan report is shown');
ok(-e "$dir/cleaned", 'cleanup handlers run when the test file dies');

done_testing();
