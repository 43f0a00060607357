package Test::Nginx::Socket;

use strict;
use warnings;

our $VERSION = '0.01';

=pod

=head1 NAME

Test::Nginx::Socket - small, from-scratch, Test::Nginx::Socket compatible
test runner for the helix nginx module (core Perl + Test::More only)

=head1 SYNOPSIS

    use lib 't/lib';
    use Test::Nginx::Socket 'no_plan';  # or: plan tests => repeat_each() * (3 * blocks());

    repeat_each(1); no_shuffle(); master_on(); workers(2); log_level('info');
    env_to_nginx('FOO');
    our $HttpConfig = qq{ ... };
    run_tests();

    __DATA__

    === TEST 1: hello
    --- http_config eval: $::HttpConfig
    --- config
    location /t { return 200 "hello\n"; }
    --- request
    GET /t
    --- response_body
    hello
    --- no_error_log
    [error]

Run with C<prove -I t/lib -r t/>.

=head1 DATA FORMAT

Blocks start with C<=== name>.  Sections start with C<--- name [filters]>,
or C<--- name [filters]: inline value>.  A multi-line section ends at the next
C<--- word> line or the next C<===> block.  As in Test::Base every value is
normalised (CRLF -> LF) and trimmed (leading blank lines and trailing
whitespace after the last newline are removed; the final newline is kept).

Filters (applied in order): C<eval> (value is Perl code evaluated in package
main, C<no strict 'vars'>; result may be an arrayref), C<chomp>, C<chop>,
C<trim>, C<base64_decode>, C<-trim>/C<-norm> (drop a default filter), or any
function name defined in package main.

C<$TEST_NGINX_FOO> / C<${TEST_NGINX_FOO}> are replaced by C<$ENV{TEST_NGINX_FOO}>
in every section (plain sections: before the other filters; eval sections:
in the resulting strings/arrays after evaluation).  Unknown variables are left
as-is and reported with diag.  Defaults always set: TEST_NGINX_SERVER_PORT
(1984), TEST_NGINX_PORT, TEST_NGINX_SERVROOT (t/servroot, absolute),
TEST_NGINX_HTML_DIR (servroot/html), TEST_NGINX_CONF_DIR, TEST_NGINX_LOG_DIR.

Markers: C<--- ONLY>, C<--- SKIP>, C<--- LAST>.

=head1 SECTIONS

=over

=item main_config, http_config, config

Inserted into the main context, the http{} block, and the default server{}
(C<listen 127.0.0.1:$TEST_NGINX_SERVER_PORT; server_name localhost;>).
No C<location /> is ever added.

=item user_files

    >>> helix.yaml
    content
    >>> sub/dir/file.txt 202401011200     (optional mtime YYYYMMDDhhmm[ss])

Written below servroot/html before nginx starts.  With C<eval> the value can
also be an arrayref of C<[path, content]>.

=item request, raw_request, more_headers

C<request>: first line C<METHOD URI [HTTP/x.y]>, the rest is the body (the
trailing newline is chomped unless C<eval>).  C<Host: localhost>,
C<Connection: close> and C<Content-Length> are added unless present in
C<more_headers>.  C<request eval> may be an arrayref: several requests are
sent in sequence, and every check section may then be an arrayref holding
the expectation for each request (a scalar applies to all of them).  An
element of that array may itself be an arrayref of packets (strings or
C<{value =E<gt> ..., delay_before =E<gt> secs}>) sent separately.
C<raw_request> is sent verbatim (arrayref = packets of one request).
C<more_headers> is C<Name: value> lines (arrayref = per request).

=item error_code, error_code_like

Status check (one assertion per request; 200 is expected when absent).

=item response_body, response_body_like, response_body_unlike

Exact compare (C<is>) / regex match on the whole (de-chunked) body with /s.
Unlike Test::Nginx, the trailing newline of a plain multi-line
C<response_body_like>/C<_unlike> pattern is dropped (no C<chomp> needed).

=item response_headers, response_headers_like, raw_response_headers_like

C<Name: value> exact match (missing header compares as ''), C<!Name> header
absent; C<_like>: C<Name: regex> matched as C<qr/^regex$/>.
C<raw_response_headers_like>: regex on the raw header block.

=item error_log, no_error_log

One assertion per line (plain text = substring) or per array element in
C<eval> mode (strings or qr//).  C<error_log> is checked after the requests
and polled until the block timeout (logs can lag behind the response);
C<no_error_log> is checked after nginx was stopped (QUIT), so it also sees
everything logged late and at shutdown.

=item grep_error_log, grep_error_log_out

All matches of the pattern in error.log, each followed by "\n", compared
with grep_error_log_out (string: C<is>, qr: C<like>).

=item timeout, abort, wait, ignore_response, must_die, log_level, workers

C<timeout: N> (seconds, C<500ms> ok; default 10) per request; a timeout is a
failed test unless C<--- abort> is given (then the socket is closed and the
partial response, if any, is checked; checks are skipped when not even the
header arrived).  C<wait: N> sleeps after the requests.  C<must_die>: nginx
start must fail (one assertion; C<must_die: N> checks the exit code) and
C<error_log> is matched against nginx's stderr + error.log.

=item ignore_alerts

Without it a block fails when error.log contains C<[alert]> / C<[emerg]>
lines not matched by one of the block's C<error_log> patterns, or
C<worker process N exited on signal> (crash).  Not checked for must_die.

=back

=head1 --- response_body_filters

As in Test::Nginx: filters applied to the response body before it is
checked: upstream's names (md5_hex sha1_hex uc lc ucfirst lcfirst length)
or code refs (eval).  A flat list applies every filter to every response,
in turn; a list of lists holds one list per request (Helix::per_request).

=head1 --- init

As in Test::Nginx: Perl code run once nginx is up, before the requests;
an error bails out.  Call subs fully qualified (upstream evaluates it in
its own package).

Upstream semantics and what is ours alone: t/lib/README.

=head1 EXTENSION: --- wait_for_log

C<--- wait_for_log eval> is an arrayref indexed like C<request eval>: before
request i is sent, error.log is polled (every 20 ms, up to the request
timeout) until it matches element i (a string, a qr//, or undef for no
wait).  Use it to wait for something the server does after a response or
after a client went away, instead of sleeping.

=head1 EXTENSION: --- reload_user_files

Same format as C<user_files>.  The block's C<request eval> must be an
arrayref.  The first request runs with the original files; then the runner
rewrites the given files, sends SIGHUP to the master and waits until the
reload has finished (new C<reconfiguring> line followed by new
C<start worker process> lines and every old worker logging C<gracefully
shutting down>), or until an C<[emerg]> line shows the reload was rejected
(the old configuration keeps running).  Then the remaining requests are sent.
C<error_log>/C<no_error_log> see the log of the whole block.  Such blocks
always run with C<master_process on> (reloading in single-process mode does
not work in nginx).  Needs log level notice or more verbose for exact
detection; otherwise the process tree is watched instead.

=head1 FUNCTIONS

Exported: run_tests blocks repeat_each no_shuffle shuffle no_long_string
no_root_location master_on master_off workers worker_connections log_level
env_to_nginx server_port server_root html_dir add_block_preprocessor
add_cleanup_handler bail_out no_diag, plus everything Test::More exports
(plan, is, ok, like, diag, done_testing, ...).

For hand-written tests (not exported, call fully qualified):

    Test::Nginx::Socket::start_server(config => '...', http_config => '...',
        main_config => '...', user_files => ">>> a.txt\nhi\n") or die;
    my $res = Test::Nginx::Socket::http_request('POST', '/v1/x',
        { 'Content-Type' => 'application/json' }, '{"a":1}', { timeout => 5 });
    # $res->{status}, $res->{headers}{'content-type'} (lower-case names),
    # $res->{body} (de-chunked), $res->{chunks}, $res->{raw}, $res->{timed_out}
    my $log = Test::Nginx::Socket::error_log_text();
    Test::Nginx::Socket::stop_server();

C<http_request> talks to whatever nginx is currently running on
TEST_NGINX_SERVER_PORT (e.g. from start_server()).

=head1 ENVIRONMENT

TEST_NGINX_BINARY (default /usr/sbin/nginx), TEST_NGINX_LOAD_MODULES
(space separated .so paths -> load_module), TEST_NGINX_SERVER_PORT,
TEST_NGINX_SERVROOT, TEST_NGINX_RANDOMIZE=1 (servroot t/servroot_PID, removed
at exit unless TEST_NGINX_SERVROOT_KEEP=1, and a free random port, for
parallel runs), TEST_NGINX_USE_VALGRIND=1 (nginx runs
under memcheck in the foreground; startup allowed 60s, timeouts x5; after
each block nginx is stopped and every valgrind.PID.log is checked; uses
t/valgrind.suppress or TEST_NGINX_VALGRIND_SUPPRESS), TEST_NGINX_STOP_TIMEOUT
(seconds to wait after SIGQUIT, default 5), TEST_NGINX_ASAN_LOGS (the
directory of ASAN_OPTIONS' log_path=DIR/asan: an asan.PID file that appears
during a block fails it; util/asan.sh sets both).

add_cleanup_handler() subs run once, at the end of run_tests() or, when the
test file dies or is interrupted half-way, from END or the INT/TERM handler.

nginx is restarted for every block (and every repeat_each repetition) with a
freshly wiped servroot, and stopped (SIGQUIT, bounded wait) at the end of it.
Blocks always run in file order (no_shuffle/shuffle are accepted no-ops).

=cut

use Test::More ();
use Time::HiRes qw(time sleep);
use Test::Nginx::Util ();
use Test::Nginx::HTTP ();

my @OurExports = qw(
    run_tests blocks repeat_each no_shuffle shuffle no_long_string
    no_root_location master_on master_off master_process_enabled workers
    worker_connections log_level env_to_nginx server_port server_root
    html_dir add_block_preprocessor add_cleanup_handler bail_out no_diag
    use_hup no_check_leak check_accum_error_log
);

our ($ServerPort, $ServerRoot, $HtmlDir);

my $RepeatEach = 1;
my @BlockPreprocessors;
my @CleanupHandlers;
my $Spec;
my $Blocks;
my $MainPid = $$;
my $NoDiag = 0;

our %KnownSections = map { $_ => 1 } qw(
    main_config http_config config user_files reload_user_files
    request raw_request more_headers
    response_body response_body_like response_body_unlike
    error_code error_code_like
    response_headers response_headers_like raw_response_headers_like
    error_log no_error_log grep_error_log grep_error_log_out
    timeout abort wait ignore_response ignore_response_body must_die log_level workers
    wait_for_log response_body_filters
    ignore_alerts ONLY SKIP LAST no_check_leak init
);

sub import {
    my $class = shift;
    my $caller = caller;

    Test::Nginx::Util::init();
    $ServerPort = $Test::Nginx::Util::Port;
    $ServerRoot = $Test::Nginx::Util::ServRoot;
    $HtmlDir    = $Test::Nginx::Util::HtmlDir;

    my @args = @_;
    while (@args) {
        my $a = shift @args;
        next unless defined $a;
        if ($a eq 'no_plan') {
            Test::More::plan('no_plan');
        }
        elsif ($a eq 'tests') {
            Test::More::plan(tests => shift @args);
        }
        elsif ($a eq 'skip_all') {
            Test::More::plan(skip_all => shift @args);
        }
        # anything else (-Base, etc.) is ignored
    }

    no strict 'refs';
    for my $f (@OurExports) {
        *{"${caller}::$f"} = \&{"Test::Nginx::Socket::$f"};
    }
    for my $f (@Test::More::EXPORT) {
        next if $f =~ /^\$/;
        $f =~ s/^&//;
        *{"${caller}::$f"} = \&{"Test::More::$f"} if defined &{"Test::More::$f"};
    }
    *{"${caller}::ServerPort"} = \$ServerPort;
    *{"${caller}::ServerRoot"} = \$ServerRoot;
    *{"${caller}::HtmlDir"}    = \$HtmlDir;
}

# ------------------------------------------------------------------------
# settings
# ------------------------------------------------------------------------

sub repeat_each {
    $RepeatEach = shift if @_;
    return $RepeatEach;
}
sub no_shuffle {}
sub shuffle {}
sub no_long_string {}
sub no_root_location {}
sub use_hup {}
sub no_check_leak {}
sub check_accum_error_log {}
sub no_diag { $NoDiag = 1 }
sub master_on  { $Test::Nginx::Util::Cfg{master} = 1 }
sub master_off { $Test::Nginx::Util::Cfg{master} = 0 }
sub master_process_enabled {
    $Test::Nginx::Util::Cfg{master} = $_[0] ? 1 : 0 if @_;
    return $Test::Nginx::Util::Cfg{master};
}
sub workers {
    $Test::Nginx::Util::Cfg{workers} = shift if @_;
    return $Test::Nginx::Util::Cfg{workers};
}
sub worker_connections {
    $Test::Nginx::Util::Cfg{worker_connections} = shift if @_;
    return $Test::Nginx::Util::Cfg{worker_connections};
}
sub log_level {
    $Test::Nginx::Util::Cfg{log_level} = shift if @_;
    return $Test::Nginx::Util::Cfg{log_level};
}
sub env_to_nginx {
    push @{ $Test::Nginx::Util::Cfg{env_names} }, @_;
}
sub server_port { $Test::Nginx::Util::Port }
sub server_root { $Test::Nginx::Util::ServRoot }
sub html_dir    { $Test::Nginx::Util::HtmlDir }
sub add_block_preprocessor { push @BlockPreprocessors, @_ }
sub add_cleanup_handler    { push @CleanupHandlers, @_ }
sub bail_out { Test::More::BAIL_OUT(@_) }

# ------------------------------------------------------------------------
# data parsing
# ------------------------------------------------------------------------

sub _read_spec {
    return $Spec if defined $Spec;
    my $text;
    {
        no strict 'refs';
        no warnings;
        my $fh = \*{"main::DATA"};
        if (defined fileno($fh)) {
            local $/;
            $text = <$fh>;
        }
    }
    if (!defined $text && open(my $in, '<', $0)) {
        local $/;
        my $all = <$in>;
        close $in;
        $text = $1 if $all =~ /^__DATA__\r?\n(.*)\z/ms;
    }
    $text //= '';
    utf8::encode($text) if utf8::is_utf8($text);    # compare bytes with bytes
    $Spec = $text;
    return $Spec;
}

sub _parse_spec {
    my ($spec) = @_;
    my @blocks;
    my @hunks = ($spec =~ /^(===.*?)(?=^===|\z)/msg);
    my $seq = 0;
    for my $hunk (@hunks) {
        my @lines = split /^/m, $hunk;
        my $head = shift @lines;
        $head =~ s/^===[ \t]*//;
        $head =~ s/\s+\z//;
        my $b = Test::Nginx::Socket::Block->new(name => $head, seq => ++$seq);
        my $cur;
        my $desc = '';
        for my $line (@lines) {
            if ($line =~ /^---[ \t]+\(?(\w+)\)?[ \t]*(.*?)\s*$/) {
                my ($sec, $rest) = ($1, $2);
                my ($filters, $inline) = ($rest, undef);
                if ($rest =~ /^(.*?)\s*:(?:\s+|\z)(.*)$/s) {
                    ($filters, $inline) = ($1, $2);
                    $inline =~ s/^\s+|\s+$//g;
                }
                $cur = $sec;
                push @{ $b->{order} }, $sec unless exists $b->{raw}{$sec};
                $b->{raw}{$sec} = defined $inline ? $inline : '';
                $b->{inline}{$sec} = defined $inline ? 1 : 0;
                $b->{filters}{$sec} = [grep { length } split /\s+/, $filters];
                next;
            }
            if (!defined $cur) {
                $desc .= $line;
                next;
            }
            if ($b->{inline}{$cur}) {
                next unless $line =~ /\S/;
                Test::More::diag("$head: extra lines after inline value of '--- $cur' ignored");
                next;
            }
            $b->{raw}{$cur} .= $line;
        }
        $desc =~ s/\s+\z//;
        $b->{description} = length $desc ? $desc : $head;
        push @blocks, $b;
    }

    # ONLY / SKIP / LAST
    my @chosen;
    for my $b (@blocks) {
        if (exists $b->{raw}{ONLY}) {
            Test::More::diag("I found ONLY: maybe you're debugging?") unless $NoDiag;
            return [$b];
        }
        next if exists $b->{raw}{SKIP};
        push @chosen, $b;
        last if exists $b->{raw}{LAST};
    }
    return \@chosen;
}

sub _all_blocks {
    $Blocks //= _parse_spec(_read_spec());
    return @$Blocks;
}

sub blocks {
    my @b = _all_blocks();
    return wantarray ? @b : scalar @b;
}

# ------------------------------------------------------------------------
# filters / variable expansion
# ------------------------------------------------------------------------

my %WarnedVars;

sub expand_env {
    my ($v, $name) = @_;
    return $v unless defined $v;
    if (ref $v eq 'ARRAY') {
        return [map { expand_env($_, $name) } @$v];
    }
    if (ref $v eq 'HASH') {
        return { map { $_ => expand_env($v->{$_}, $name) } keys %$v };
    }
    if (ref $v eq 'Regexp') {
        my $s = "$v";
        return $v unless $s =~ /TEST_NGINX_/;
        my $e = expand_env($s, $name);
        return qr/$e/;
    }
    return $v if ref $v;
    $v =~ s{(\$\{(TEST_NGINX_\w+)\}|\$(TEST_NGINX_\w+))}{
        my ($all, $var) = ($1, $2 // $3);
        if (exists $ENV{$var}) {
            $ENV{$var};
        } else {
            Test::More::diag(($name // '') . ": environment variable \$$var is not set")
                unless $WarnedVars{($name // '') . $var}++;
            $all;
        }
    }ge;
    return $v;
}

sub _trim {
    my ($v) = @_;
    $v =~ s/\A(?:[ \t]*\n)+//;
    $v =~ s/(?<=\n)\s+\z//;
    return $v;
}

# Apply filters for every section of a block; returns error text on failure.
sub _filter_block {
    my ($b) = @_;
    my $name = $b->{name};
    for my $sec (@{ $b->{order} }) {
        my @f = ('norm', 'trim');
        for my $x (@{ $b->{filters}{$sec} }) {
            if ($x =~ /^-(.*)$/) { my $d = $1; @f = grep { $_ ne $d } @f }
            else { push @f, $x }
        }
        my $is_eval = grep { $_ eq 'eval' } @f;
        my $v = $b->{raw}{$sec};
        my $expanded = 0;
        for my $f (@f) {
            if (!$is_eval && !$expanded && $f ne 'norm' && $f ne 'trim') {
                $v = expand_env($v, $name);
                $expanded = 1;
            }
            if ($f eq 'norm') {
                $v =~ s/\r\n/\n/g;
                $v =~ s/\r/\n/g;
            }
            elsif ($f eq 'trim') {
                $v = _trim($v) unless ref $v;
            }
            elsif ($f eq 'chomp') {
                chomp $v unless ref $v;
            }
            elsif ($f eq 'chop') {
                chop $v unless ref $v;
            }
            elsif ($f eq 'base64_decode') {
                require MIME::Base64;
                $v = MIME::Base64::decode_base64($v);
            }
            elsif ($f eq 'eval') {
                my @r;
                {
                    local $@;
                    @r = eval "package main; no strict 'vars'; no warnings 'once';\n#line 1 \"$name --- $sec\"\n$v";
                    if ($@) {
                        return "eval error in '--- $sec': $@";
                    }
                }
                $v = $r[0];
            }
            else {
                no strict 'refs';
                if (defined &{"main::$f"}) {
                    local $_ = $v;
                    my @r = &{"main::$f"}($v);
                    if (!@r || (@r == 1 && defined $r[0] && $r[0] =~ /\A(\d+|)\z/)) {
                        $v = $_;
                    }
                    else {
                        $v = $r[0];
                    }
                }
                else {
                    return "unknown filter '$f' in '--- $sec'";
                }
            }
        }
        $v = expand_env($v, $name) if !$expanded;
        if (!$is_eval && !$b->{inline}{$sec} && !ref $v
            && ($sec eq 'response_body_like' || $sec eq 'response_body_unlike'))
        {
            # deviation from Test::Nginx: a plain multi-line pattern does not
            # need "chomp" (its trailing newline is dropped)
            $v =~ s/\n\z//;
        }
        $b->{sections}{$sec} = $v;
    }
    for my $sec (@{ $b->{order} }) {
        next if $KnownSections{$sec};
        Test::More::diag("$name: unknown/unsupported section '--- $sec' ignored")
            unless $NoDiag;
    }
    return;
}

# ------------------------------------------------------------------------
# running
# ------------------------------------------------------------------------

sub _parse_time {
    my ($t) = @_;
    return undef unless defined $t && length $t;
    return $1 / 1000 if $t =~ /^\s*([\d.]+)\s*ms\s*$/;
    return $1 if $t =~ /^\s*([\d.]+)\s*s?\s*$/;
    return undef;
}

sub _idx {
    my ($v, $i) = @_;
    return ref $v eq 'ARRAY' ? $v->[$i] : $v;
}

sub _patterns {
    my ($v) = @_;
    return () unless defined $v;
    return grep { defined } @$v if ref $v eq 'ARRAY';
    return ($v) if ref $v;
    return grep { /\S/ } split /\n/, $v;
}

sub _pat_match {
    my ($text, $p) = @_;
    return ref $p eq 'Regexp' ? scalar($text =~ $p) : index($text, $p) >= 0;
}

sub _pat_desc {
    my ($p) = @_;
    my $s = "$p";
    $s = substr($s, 0, 80) . '...' if length $s > 80;
    return $s;
}

sub _user_files {
    my ($v) = @_;
    return [] unless defined $v;
    if (ref $v eq 'ARRAY') {
        return [map { [ $_->[0], $_->[1] // '', $_->[2] ] } @$v];
    }
    return Test::Nginx::Util::parse_user_files($v);
}

sub _parse_headers_text {
    my ($text) = @_;
    my @h;
    return \@h unless defined $text;
    for my $l (split /\n/, $text) {
        next if $l =~ /^\s*(?:#|$)/;
        my ($k, $v) = split /:[ \t]*/, $l, 2;
        $k =~ s/^\s+|\s+$//g;
        $v //= '';
        $v =~ s/\s+$//;
        push @h, [$k, $v];
    }
    return \@h;
}

# Build one request -> { packets => [...], head => bool, line => "GET /" }
sub _build_one_request {
    my ($one, $hdr_text, $is_eval) = @_;
    my @packets = ref $one eq 'ARRAY' ? @$one : ($one);
    my @vals = map { ref $_ eq 'HASH' ? ($_->{value} // '') : ($_ // '') } @packets;
    my $text = join '', @vals;
    if (!$is_eval) {
        1 while $text =~ s/\A[ \t]*#[^\n]*\n// || $text =~ s/\A\s+//;
    }
    else {
        $text =~ s/\A\s+//;
    }
    my $removed = length(join '', @vals) - length($text);
    my ($line, $body) = split /\n/, $text, 2;
    $line //= '';
    my $orig_head_len = $removed + length($line) + (defined $body ? 1 : 0);
    $line =~ s/\r$//;
    my ($meth, $uri, $ver) = $line =~ /^\s*(\S+)(?:\s+(\S+))?(?:\s+(\S+))?\s*$/;
    $meth //= 'GET';
    $uri  //= '/';
    $ver  //= 'HTTP/1.1';
    if (defined $body && !$is_eval) {
        chomp $body;
    }
    $body = undef if defined $body && $body eq '';
    my $req = Test::Nginx::HTTP::build_request(
        method => $meth, uri => $uri, http_ver => $ver,
        headers => _parse_headers_text($hdr_text), body => $body);

    my @out;
    if (@packets > 1) {
        # keep the packet boundaries of the body part
        my $head_len = length($req) - length($body // '');
        my $pos = 0;
        my $prev = 0;
        for my $i (0 .. $#packets) {
            $pos += length $vals[$i];
            my $cut = $pos <= $orig_head_len ? $head_len : $head_len + ($pos - $orig_head_len);
            $cut = length $req if $i == $#packets || $cut > length $req;
            my $chunk = substr($req, $prev, $cut - $prev);
            $prev = $cut;
            my $delay = ref $packets[$i] eq 'HASH' ? $packets[$i]{delay_before} : undef;
            push @out, { value => $chunk, delay_before => $delay };
        }
    }
    elsif (ref $packets[0] eq 'HASH' && $packets[0]{delay_before}) {
        @out = ({ value => $req, delay_before => $packets[0]{delay_before} });
    }
    else {
        @out = ($req);
    }
    return { packets => \@out, head => uc($meth) eq 'HEAD', line => "$meth $uri" };
}

sub _build_requests {
    my ($b) = @_;
    my $s = $b->{sections};
    if (defined $s->{raw_request}) {
        my $raw = $s->{raw_request};
        my @p = ref $raw eq 'ARRAY' ? @$raw : ($raw);
        my $first = ref $p[0] eq 'HASH' ? $p[0]{value} : $p[0];
        return [{ packets => \@p, head => (($first // '') =~ /^\s*HEAD\s/ ? 1 : 0),
                  line => 'raw_request' }];
    }
    my $req = $s->{request};
    return [] unless defined $req;
    my $is_eval = grep { $_ eq 'eval' } @{ $b->{filters}{request} || [] };
    my $mh = $s->{more_headers};
    my @list = ref $req eq 'ARRAY' ? @$req : ($req);
    my @out;
    for my $i (0 .. $#list) {
        push @out, _build_one_request($list[$i], _idx($mh, $i), $is_eval);
    }
    return \@out;
}

sub _count_response_checks {
    my ($s, $i) = @_;
    my $n = 1;    # status
    $n++ if defined _idx($s->{raw_response_headers_like}, $i);
    for my $k (qw(response_headers response_headers_like)) {
        my $v = _idx($s->{$k}, $i);
        $n += scalar @{ _parse_headers_text($v) } if defined $v;
    }
    return $n if defined $s->{ignore_response_body};
    $n++ if defined _idx($s->{response_body}, $i)
        || defined _idx($s->{response_body_like}, $i);
    $n++ if defined _idx($s->{response_body_unlike}, $i);
    return $n;
}

sub _check_response {
    my ($b, $res, $i, $sfx, $timeout) = @_;
    my $name = $b->{name};
    my $s = $b->{sections};
    my $abort = defined $s->{abort};

    if ($res->{timed_out}) {
        if (!$abort) {
            Test::More::fail("$name - request timed out after ${timeout}s$sfx");
            Test::More::diag("partial response: " . _summ($res->{raw})) if length $res->{raw};
        }
    }
    elsif ($res->{error} && !defined $s->{ignore_response}) {
        Test::More::fail("$name - $res->{error}$sfx");
    }
    elsif ($res->{incomplete} && !$abort && !defined $s->{ignore_response}) {
        Test::More::fail("$name - incomplete response: $res->{incomplete}$sfx");
    }
    if (defined $res->{extra} && length $res->{extra}) {
        Test::More::diag("$name - unexpected extra bytes after the response$sfx: " . _summ($res->{extra}));
    }

    return if defined $s->{ignore_response};

    if ($abort && $res->{timed_out} && !$res->{headers_done}) {
        SKIP: {
            Test::More::skip("$name - client aborted before the response header$sfx",
                             _count_response_checks($s, $i));
        }
        return;
    }

    my $status = $res->{status} // '';
    if (defined(my $ecl = _idx($s->{error_code_like}, $i))) {
        Test::More::like($status, qr/$ecl/sm, "$name - status code ok$sfx");
    }
    else {
        my $ec = _idx($s->{error_code}, $i);
        $ec = 200 unless defined $ec && length $ec;
        Test::More::is($status, $ec, "$name - status code ok$sfx");
    }

    if (defined(my $rh = _idx($s->{raw_response_headers_like}, $i))) {
        Test::More::like($res->{raw_headers} // '', ref $rh ? $rh : qr/$rh/s,
                         "$name - raw_response_headers_like$sfx");
    }

    my $hdrs = $res->{headers} || {};
    if (defined(my $rh = _idx($s->{response_headers}, $i))) {
        for my $h (@{ _parse_headers_text($rh) }) {
            my ($k, $v) = @$h;
            if ($k =~ s/^!\s*//) {
                Test::More::ok(!exists $hdrs->{lc $k}, "$name - header $k not present$sfx")
                    or Test::More::diag("got $k: $hdrs->{lc $k}");
                next;
            }
            Test::More::is($hdrs->{lc $k} // '', $v, "$name - header $k ok$sfx");
        }
    }
    if (defined(my $rh = _idx($s->{response_headers_like}, $i))) {
        for my $h (@{ _parse_headers_text($rh) }) {
            my ($k, $v) = @$h;
            Test::More::like($hdrs->{lc $k} // '', qr/^$v$/, "$name - header $k like ok$sfx");
        }
    }

    my $body = $res->{body} // '';
    if (defined(my $f = $s->{response_body_filters})) {
        # as upstream: a list of filters applies to every response in turn;
        # a list of lists holds one list per request; a filter is a code
        # ref or one of upstream's names (md5_hex, sha1_hex, uc, lc, ...)
        if (!ref $f) {
            $f = [grep { length } split /\s+/, $f];
        }
        elsif (ref $f ne 'ARRAY') {
            $f = [$f];
        }
        if (@$f && ref $f->[0] eq 'ARRAY') {
            $f = $f->[$i];
            Test::More::BAIL_OUT("$name - --- response_body_filters has no"
                                 . " list for request $i") unless defined $f;
        }
        for my $fn (@$f) {
            $body = _body_filter($name, $fn, $body);
        }
    }
    if (!defined $s->{ignore_response_body}) {
        if (defined(my $exp = _idx($s->{response_body}, $i))) {
            Test::More::is($body, $exp, "$name - response_body - response is expected$sfx");
        }
        elsif (defined(my $pat = _idx($s->{response_body_like}, $i))) {
            Test::More::like($body, ref $pat eq 'Regexp' ? $pat : qr/$pat/s,
                             "$name - response_body_like - response is expected ("
                             . _summ($body) . ")$sfx");
        }
        if (defined(my $upat = _idx($s->{response_body_unlike}, $i))) {
            Test::More::unlike($body, ref $upat eq 'Regexp' ? $upat : qr/$upat/s,
                               "$name - response_body_unlike - response is expected ("
                               . _summ($body) . ")$sfx");
        }
    }
}

my %BodyFilters = (
    md5_hex  => sub { require Digest::MD5; Digest::MD5::md5_hex($_[0]) },
    sha1_hex => sub { require Digest::SHA; Digest::SHA::sha1_hex($_[0]) },
    uc => sub { uc $_[0] }, lc => sub { lc $_[0] },
    ucfirst => sub { ucfirst $_[0] }, lcfirst => sub { lcfirst $_[0] },
    length => sub { length $_[0] },
);

sub _body_filter {
    my ($name, $fn, $body) = @_;
    return $fn->($body) if ref $fn eq 'CODE';
    return $BodyFilters{$fn}->($body) if !ref $fn && $BodyFilters{$fn};
    Test::More::BAIL_OUT("$name - unknown filter in --- response_body_filters: "
                         . ($fn // 'undef'));
}

sub _summ {
    my ($s) = @_;
    $s //= '';
    $s = substr($s, 0, 60) . '...' if length $s > 60;
    $s =~ s/([\0-\037\177])/sprintf('\\x%02x', ord $1)/ge;
    return $s;
}

# error_log with retry (logs may lag behind the response)
sub _check_error_log {
    my ($b, $sfx, $wait, $text_cb) = @_;
    my $name = $b->{name};
    my @pats = _patterns($b->{sections}{error_log});
    return unless @pats;
    my $deadline = time + $wait;
    my $text;
    while (1) {
        $text = $text_cb->();
        my $missing = grep { !_pat_match($text, $_) } @pats;
        last if !$missing || time > $deadline;
        sleep 0.05;
    }
    for my $p (@pats) {
        Test::More::ok(_pat_match($text, $p),
            "$name - pattern \"" . _pat_desc($p) . "\" should exist in error.log$sfx");
    }
}

sub _check_no_error_log {
    my ($b, $sfx, $text) = @_;
    my $name = $b->{name};
    for my $p (_patterns($b->{sections}{no_error_log})) {
        my $ok = !_pat_match($text, $p);
        Test::More::ok($ok,
            "$name - pattern \"" . _pat_desc($p) . "\" should not exist in error.log$sfx");
        if (!$ok) {
            my @l = grep { _pat_match($_, $p) } split /\n/, $text;
            splice @l, 5 if @l > 5;
            Test::More::diag("matching line: $_") for @l;
        }
    }
}

sub _check_grep_error_log {
    my ($b, $sfx, $text, $rep) = @_;
    my $s = $b->{sections};
    return unless defined $s->{grep_error_log} && defined $s->{grep_error_log_out};
    my $pat = $s->{grep_error_log};
    $pat =~ s/\n\z// unless ref $pat;
    my $out = '';
    if (ref $pat eq 'Regexp') {
        while ($text =~ /$pat/g) { $out .= "$&\n" }
    }
    else {
        my $pos = 0;
        while ((my $i = index($text, $pat, $pos)) >= 0) {
            $out .= "$pat\n";
            $pos = $i + length $pat;
        }
    }
    my $exp = $s->{grep_error_log_out};
    $exp = $exp->[$rep - 1] if ref $exp eq 'ARRAY';
    if (ref $exp eq 'Regexp') {
        Test::More::like($out, $exp, "$b->{name} - grep_error_log_out$sfx");
    }
    else {
        Test::More::is($out, $exp, "$b->{name} - grep_error_log_out$sfx");
    }
}

sub _check_alerts {
    my ($b, $sfx, $text) = @_;
    return if defined $b->{sections}{ignore_alerts};
    my @pats = _patterns($b->{sections}{error_log});
    my @bad;
    for my $l (split /\n/, $text) {
        if ($l =~ /worker process \d+ exited on signal/) {
            push @bad, $l;
            next;
        }
        next unless $l =~ /\[(?:alert|emerg)\]/;
        next if grep { _pat_match($l, $_) } @pats;
        push @bad, $l;
    }
    return unless @bad;
    Test::More::fail("$b->{name} - error.log has no [alert]/[emerg]/crash lines$sfx");
    splice @bad, 10 if @bad > 10;
    Test::More::diag($_) for @bad;
}

sub _check_valgrind {
    my ($b, $sfx, %o) = @_;
    return unless $Test::Nginx::Util::Cfg{valgrind};
    for my $bad (Test::Nginx::Util::check_valgrind_logs(%o)) {
        my ($file, $reason, $excerpt, $warn_only) = @$bad;
        if ($warn_only) {
            Test::More::diag("$b->{name} - valgrind: $file: $reason");
            next;
        }
        Test::More::fail("$b->{name} - valgrind: $file: $reason$sfx");
        Test::More::diag($excerpt);
    }
}

# TEST_NGINX_ASAN_LOGS: the directory of ASAN_OPTIONS' log_path (asan.PID
# files); a report that appeared during a block fails it
my %AsanSeen;

# reports there before this test file started are not its own (util/asan.sh
# shows every report at the end of the run)
if (my $d = $ENV{TEST_NGINX_ASAN_LOGS}) {
    if (opendir my $dh, $d) {
        $AsanSeen{$_} = 1 for grep { /^asan\.\d+$/ } readdir $dh;
        closedir $dh;
    }
}

sub _check_asan {
    my ($b, $sfx) = @_;
    my $dir = $ENV{TEST_NGINX_ASAN_LOGS} or return;
    opendir my $dh, $dir or return;
    my @new = sort grep { /^asan\.\d+$/ && !$AsanSeen{$_}++ } readdir $dh;
    closedir $dh;
    for my $f (@new) {
        my @l = split /\n/, Test::Nginx::Util::slurp("$dir/$f");
        Test::More::fail("$b->{name} - AddressSanitizer: $dir/$f$sfx");
        Test::More::diag(join "\n", @l[0 .. ($#l < 60 ? $#l : 60)]);
    }
}

# cleanup handlers run once: at the end of run_tests, or when the test
# file dies or is interrupted half-way (END, signal handler), so that what
# a test started (a second nginx, a private Redis) never outlives it
my $CleanedUp = 0;

sub _run_cleanup {
    return if $CleanedUp++;
    for my $h (@CleanupHandlers) {
        eval { $h->(); 1 } or Test::More::diag("cleanup handler: $@");
    }
}

sub _run_block_once {
    my ($b, $rep) = @_;
    my $name = $b->{name};
    my $s = $b->{sections};
    my $f = Test::Nginx::Util::valgrind_factor();
    my $timeout = _parse_time($s->{timeout}) // 10;
    my $rtimeout = $timeout * $f;
    my $rsfx = $RepeatEach > 1 ? " (rep $rep)" : '';
    my $reload = defined $s->{reload_user_files};

    Test::Nginx::Util::prepare_servroot();
    Test::Nginx::Util::write_user_files(_user_files($s->{user_files}));
    Test::Nginx::Util::write_config(
        main_config => $s->{main_config},
        http_config => $s->{http_config},
        config      => $s->{config},
        log_level   => (defined $s->{log_level} && length $s->{log_level} ? $s->{log_level} : undef),
        workers     => (defined $s->{workers} && length $s->{workers} ? $s->{workers} : undef),
        master      => ($reload ? 1 : undef),
    );

    if (defined $s->{must_die}) {
        my $r = Test::Nginx::Util::start_nginx();
        my $died = !$r->{ok} && $r->{exited};
        my $md = $s->{must_die};
        if (length $md && $md =~ /^\d+$/) {
            Test::More::is($died ? (($r->{status} // 0) >> 8) : 0, $md,
                           "$name - die with the expected exit code$rsfx");
        }
        else {
            Test::More::ok($died, "$name - die as expected$rsfx")
                or Test::More::diag($r->{ok} ? "nginx started" : $r->{error});
        }
        Test::Nginx::Util::stop_nginx() if !$died;
        my $text = sub { Test::Nginx::Util::read_stderr_log() . Test::Nginx::Util::read_error_log(0) };
        _check_error_log($b, $rsfx, 0, $text);
        _check_no_error_log($b, $rsfx, $text->());
        _check_valgrind($b, $rsfx, ignore_leaks => 1);
        _check_asan($b, $rsfx);
        return;
    }

    my $r = Test::Nginx::Util::start_nginx();
    if (!$r->{ok}) {
        Test::More::fail("$name - nginx failed to start: $r->{error}$rsfx");
        my $out = Test::Nginx::Util::read_stderr_log();
        Test::More::diag("stderr: $out") if length $out;
        my $log = Test::Nginx::Util::read_error_log(0);
        my @l = grep { /\[(?:emerg|alert|crit|error)\]/ } split /\n/, $log;
        Test::More::diag("error.log: $_") for @l[0 .. ($#l < 20 ? $#l : 20)];
        Test::Nginx::Util::stop_nginx();
        _check_valgrind($b, $rsfx, ignore_leaks => 1);
        _check_asan($b, $rsfx);
        return;
    }

    if (defined $s->{init}) {
        # as upstream: Perl code run once nginx is up, before the requests
        my $code = $s->{init};
        my $ok = eval "package main; no strict 'vars';\n$code; 1";
        Test::More::BAIL_OUT("$name - init failed: $@") unless $ok;
    }

    my $reqs = _build_requests($b);
    # upstream bails out on a block without a request
    Test::More::BAIL_OUT("$name - request empty") unless @$reqs;
    if ($reload && @$reqs < 2) {
        Test::More::fail("$name - --- reload_user_files needs --- request eval with an arrayref of >= 2 requests");
    }
    my $n = @$reqs;
    for my $i (0 .. $#$reqs) {
        if ($reload && $i == 1) {
            Test::Nginx::Util::write_user_files(_user_files($s->{reload_user_files}));
            my $rr = Test::Nginx::Util::reload_nginx(
                master => 1, timeout => (10 > $timeout ? 10 : $timeout) * $f,
                log_level => $s->{log_level});
            if (!$rr->{ok}) {
                Test::More::fail("$name - reload: $rr->{error}$rsfx");
            }
        }
        if (defined(my $pat = _idx($s->{wait_for_log}, $i))) {
            # a signal, not a sleep: go on once the log shows it happened
            my $re = ref $pat eq 'Regexp' ? $pat : qr/\Q$pat\E/;
            my $until = time + $rtimeout;
            until (Test::Nginx::Util::read_error_log(0) =~ $re) {
                if (time > $until) {
                    Test::More::fail("$name - error.log never showed $pat before request $i$rsfx");
                    last;
                }
                sleep 0.02;
            }
        }
        my $q = $reqs->[$i];
        my $res = Test::Nginx::HTTP::send_raw(
            host => '127.0.0.1', port => $Test::Nginx::Util::Port,
            packets => $q->{packets}, timeout => $rtimeout, head => $q->{head});
        my @sfx;
        push @sfx, "req $i" if $n > 1;
        push @sfx, "rep $rep" if $RepeatEach > 1;
        my $sfx = @sfx ? ' (' . join(', ', @sfx) . ')' : '';
        _check_response($b, $res, $i, $sfx, $rtimeout);
    }

    if (my $w = _parse_time($s->{wait})) {
        sleep $w;
    }

    my $errwait = $rtimeout > 3 * $f ? $rtimeout : 3 * $f;
    _check_error_log($b, $rsfx, $errwait, sub { Test::Nginx::Util::read_error_log(0) });

    my ($stopped, $msg, $gone) = Test::Nginx::Util::stop_nginx();
    if ($gone) {
        Test::More::fail("$name - nginx kept running until the end of the block$rsfx")
            or Test::More::diag("$msg (crashed?)");
    }
    elsif ($msg) {
        Test::More::diag("$name - $msg");
    }

    my $log = Test::Nginx::Util::read_error_log(0);
    _check_no_error_log($b, $rsfx, $log);
    _check_grep_error_log($b, $rsfx, $log, $rep);
    _check_alerts($b, $rsfx, $log);
    _check_valgrind($b, $rsfx);
    _check_asan($b, $rsfx);
}

sub _sig_handler {
    my ($sig) = @_;
    Test::Nginx::Util::stop_nginx();
    _run_cleanup();
    $SIG{$sig} = 'DEFAULT';
    kill $sig, $$;
}

sub run_tests {
    Test::Nginx::Util::init();
    Test::Nginx::Util::acquire_lock();
    local $SIG{INT}  = \&_sig_handler;
    local $SIG{TERM} = \&_sig_handler;
    local $SIG{PIPE} = 'IGNORE';

    for my $b (_all_blocks()) {
        # upstream keeps the previous block's nginx (and ignores this
        # block's http_config and user_files) when --- config is absent;
        # we refuse such a block instead of guessing
        Test::More::BAIL_OUT("$b->{name} - no --- config section (add an"
                             . " empty one)") unless exists $b->{raw}{config};
        if (my $err = _filter_block($b)) {
            Test::More::fail("$b->{name} - $err");
            next;
        }
        $_->($b) for @BlockPreprocessors;
        for my $rep (1 .. $RepeatEach) {
            _run_block_once($b, $rep);
        }
    }
    Test::Nginx::Util::stop_nginx();
    _run_cleanup();
}

# ------------------------------------------------------------------------
# helpers for hand-written tests
# ------------------------------------------------------------------------

sub start_server {
    my (%sec) = @_;
    Test::Nginx::Util::init();
    Test::Nginx::Util::acquire_lock();
    my %v = map { $_ => expand_env($sec{$_}, 'start_server') } keys %sec;
    Test::Nginx::Util::prepare_servroot();
    Test::Nginx::Util::write_user_files(_user_files($v{user_files}));
    Test::Nginx::Util::write_config(%v);
    my $r = Test::Nginx::Util::start_nginx();
    if (!$r->{ok}) {
        Test::More::diag("start_server: $r->{error}");
        my $out = Test::Nginx::Util::read_stderr_log();
        Test::More::diag("stderr: $out") if length $out;
        Test::Nginx::Util::stop_nginx();
        return 0;
    }
    return 1;
}

sub stop_server { Test::Nginx::Util::stop_nginx() }

sub error_log_text { Test::Nginx::Util::read_error_log(0) }

sub reload_server {
    my (%o) = @_;
    Test::Nginx::Util::write_user_files(_user_files($o{user_files})) if defined $o{user_files};
    return Test::Nginx::Util::reload_nginx(master => $Test::Nginx::Util::Cfg{master}, %o);
}

sub http_request {
    my ($method, $uri, $headers, $body, $opts) = @_;
    $opts ||= {};
    my @h;
    if (ref $headers eq 'ARRAY') {
        my @kv = @$headers;
        while (@kv) { my $k = shift @kv; push @h, [$k, shift @kv] }
    }
    elsif (ref $headers eq 'HASH') {
        @h = map { [$_, $headers->{$_}] } sort keys %$headers;
    }
    my $req = Test::Nginx::HTTP::build_request(
        method => $method, uri => $uri, headers => \@h, body => $body,
        http_ver => $opts->{http_ver});
    return Test::Nginx::HTTP::send_raw(
        host => $opts->{host} // '127.0.0.1',
        port => $opts->{port} // $Test::Nginx::Util::Port,
        packets => [$req],
        timeout => ($opts->{timeout} // 10) * Test::Nginx::Util::valgrind_factor(),
        head => uc($method) eq 'HEAD');
}

END {
    local $?;
    if ($$ == $MainPid) {
        Test::Nginx::Util::stop_nginx();
        _run_cleanup();
        Test::Nginx::Util::cleanup_servroot();
        my $tb = Test::More->builder;
        if ($tb->current_test > 0 && !$tb->has_plan) {
            $tb->done_testing;
        }
    }
}

package Test::Nginx::Socket::Block;

our $AUTOLOAD;

sub new {
    my ($class, %a) = @_;
    return bless { %a, order => [], raw => {}, filters => {}, inline => {}, sections => {} }, $class;
}
sub name        { $_[0]{name} }
sub description { $_[0]{description} }
sub seq_num     { $_[0]{seq} }
sub set_value {
    my ($self, $k, $v) = @_;
    push @{ $self->{order} }, $k unless exists $self->{sections}{$k} || exists $self->{raw}{$k};
    $self->{sections}{$k} = $v;
}
sub has_section { exists $_[0]{sections}{$_[1]} }
sub AUTOLOAD {
    my $self = shift;
    my $n = $AUTOLOAD;
    $n =~ s/.*:://;
    return if $n eq 'DESTROY';
    return $self->{sections}{$n};
}

1;
