# A task's callback_url is a client's: it may aim at the gateway's own
# network.  Callbacks connect only to public addresses unless
# tasks.callback_allow lists the network, checked on the address curl
# connects to (every spelling of loopback lands there); a URL that is not
# plain http(s) is a 400 at POST; redirects are answers, not followed; a
# webhook's long or endless answer is cut at tasks.callback_max_answer
# without the worker's memory growing.  A listener of this file (on every
# loopback address, IPv4 and IPv6) counts what reaches it.
use Test::Nginx::Socket 'no_plan';
use Helix;
use HelixPg;
use IO::Socket::IP;
use Socket qw(IPPROTO_IPV6 IPV6_V6ONLY);
use POSIX ();

HelixPg::reset();

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";
our $LPort = $Port + 10;
our $Hits = "/tmp/helix-068-hits.$$";
our $Main = $$;

$ENV{HELIX_TEST_ALLOW} = '127.0.0.0/8, ::1/128';

# the listener: one process per connection, one line per request to $Hits
our $Listener = fork // die "fork: $!";
if ($Listener == 0) {
    $SIG{CHLD} = 'IGNORE';
    $SIG{PIPE} = 'IGNORE';
    my $s = IO::Socket::IP->new(LocalHost => '::', LocalPort => $LPort,
                                Listen => 64, ReuseAddr => 1, V6Only => 0)
        or POSIX::_exit(1);
    while (1) {
        my $c = $s->accept or next;
        if (fork == 0) { serve($c); POSIX::_exit(0); }
        close $c;
    }
}

END { local $?; if ($$ == $Main && $Listener) { kill 'TERM', $Listener; waitpid $Listener, 0; unlink $Hits; } }

sub serve {
    my ($c) = @_;
    my $head = '';
    while ($head !~ /\r\n\r\n/) { sysread($c, $head, 4096, length $head) or return; }
    my ($path) = $head =~ m{^\S+ (\S+)};
    my ($len) = $head =~ /^content-length: (\d+)/mi;
    my ($body) = $head =~ /\r\n\r\n(.*)$/s;
    while (length $body < ($len // 0)) { sysread($c, $body, 4096, length $body) or last; }
    open my $fh, '>>', $Hits; print $fh "$path\n"; close $fh;
    my $mib = "x" x 65536;
    if ($path eq '/huge') {
        # 50 MiB announced and sent
        syswrite $c, "HTTP/1.1 200 OK\r\nContent-Length: 52428800\r\n\r\n";
        for (1 .. 800) { syswrite($c, $mib) or return; }
    } elsif ($path eq '/endless') {
        # chunks until the gateway hangs up
        syswrite $c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        while (1) { syswrite($c, "10000\r\n$mib\r\n") or return; }
    } elsif ($path eq '/redirect') {
        syswrite $c, "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:$LPort/target\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    } else {
        syswrite $c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    }
}

sub hits {
    open my $fh, '<', $Hits or return '';
    my @h = <$fh>;
    chomp @h;
    return join ' ', @h;
}

sub reset_hits { unlink $Hits; }

our $Config = Helix::config(extra => <<'_EOC_');
    location /v1/tasks { helix_endpoint tasks; }
    location = /metrics { helix_endpoint metrics; }
_EOC_

# this nginx's callbacks by outcome, as /metrics counts them
sub callback_counts {
    my $m = `curl -s -m 10 http://127.0.0.1:$ENV{TEST_NGINX_SERVER_PORT}/metrics`;
    my %c = $m =~ /^helixagent_task_callbacks_total\{outcome="(\w+)"\} (\d+)$/mg;
    return join ' ', map { "$_=" . ($c{$_} // '?') } qw(delivered failed retried refused);
}

sub yaml {
    my ($tasks) = @_;
    return ">>> helix.yaml\n$Helix::Providers" . HelixPg::yaml()
        . "tasks:\n  poll_interval: 300ms\n  callback_backoff: 100ms\n"
        . "  callback_retries: 0\n" . ($tasks // '');
}

sub post_task {
    my ($url) = @_;
    my ($code, $body) = HelixPg::curl('POST', "$Base/v1/tasks",
        qq({"type": "completion", "payload": {"prompt": "cb $url", "model": "gpt-4o", "callback_url": "$url"}}),
        'Content-Type: application/json');
    my ($id) = $body =~ /"task_id":"([^"]+)"/;
    return $id // "none: $code $body";
}

# posts a task per URL, waits for every callback's outcome:
# "<url> <task status> <callback status> <callback attempts>" per line
sub outcomes {
    my (@urls) = @_;
    my @ids = map { post_task($_) } @urls;
    my $in = join ',', map { "'$_'" } @ids;
    HelixPg::wait_sql("SELECT count(*) FROM background_tasks WHERE id IN ($in) AND callback_status IN ('delivered', 'failed', 'refused')",
                      qr/^${\ scalar @ids}$/, 60);
    return join "\n", map {
        "$urls[$_] " . HelixPg::psql("SELECT status || ' ' || coalesce(callback_status, '-') || ' ' || callback_attempts FROM background_tasks WHERE id = '$ids[$_]'")
    } 0 .. $#ids;
}

sub rss_kb {
    my $pid = `cat $ENV{TEST_NGINX_SERVER_ROOT}/logs/nginx.pid`;
    chomp $pid;
    open my $fh, '<', "/proc/$pid/status" or return -1;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+) kB/; }
    return -1;
}

sub wait_port {
    for (1 .. 200) {
        my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $LPort);
        return 1 if $s;
        select(undef, undef, undef, 0.05);
    }
    return 0;
}

wait_port() or die "the callback listener did not start";

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a callback_url that is not plain http(s) is a 400 naming it, nothing is written
--- http_config eval: Helix::http_config()
--- config eval: $::Config
--- user_files eval: main::yaml("  enabled: false\n")
--- request eval
[map { "POST /v1/tasks\n" . qq({"type": "completion", "payload": {"prompt": "x", "callback_url": $_}}) }
 '"ftp://example.com/x"', '"file:///etc/passwd"', '"gopher://example.com:70/_x"',
 '"http://exa mple.com/"', '"http://example.com/x\r\nX-Injected: 1"', '"http://example.com/\tx"',
 '"http://user:secret@example.com/"', '"http://u@127.0.0.1/"', '"http://example.com/\u00e9"',
 '"http:///path"', '"http://example.com/' . ('a' x 2100) . '"', '"example.com/x"', '42',
 '"HTTPS://example.com/ok"']
--- error_code eval: [(400) x 13, 202]
--- response_body_filters eval
Helix::per_request([(sub { $_[0] =~ /"param":"payload.callback_url"/ ? ($_[0] =~ /"message":"(\\"callback_url\\" [^"]*)"/)[0] : $_[0] }) x 13,
 sub { my $n = HelixPg::psql("SELECT count(*) FROM background_tasks"); HelixPg::psql("DELETE FROM background_tasks"); $n }])
--- response_body eval
['\"callback_url\" must be an http:// or https:// URL', '\"callback_url\" must be an http:// or https:// URL',
 '\"callback_url\" must be an http:// or https:// URL',
 '\"callback_url\" must not hold spaces, control or non-ASCII characters',
 '\"callback_url\" must not hold spaces, control or non-ASCII characters',
 '\"callback_url\" must not hold spaces, control or non-ASCII characters',
 '\"callback_url\" must not hold a user name or password', '\"callback_url\" must not hold a user name or password',
 '\"callback_url\" must not hold spaces, control or non-ASCII characters',
 '\"callback_url\" has no host', '\"callback_url\" is longer than 2048 characters',
 '\"callback_url\" must be an http:// or https:// URL', '\"callback_url\" must be an http:// or https:// URL',
 '1']



=== TEST 2: every spelling of loopback, and private, link-local, metadata and CGN addresses: refused, the listener gets nothing, the task itself completes
--- http_config eval: Helix::http_config()
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request
GET /v1/models
--- response_body_filters eval
sub {
    main::reset_hits();
    my @urls = map { "http://$_:$::LPort/ok" } qw(127.0.0.1 localhost 127.1 2130706433 0x7f.0.0.1 0177.0.0.1
        [::1] [::ffff:127.0.0.1] [::ffff:7f00:1] [::127.0.0.1] 0.0.0.0 [::] 127.0.0.2 10.0.0.1 172.16.0.1 192.168.0.1
        169.254.169.254 100.64.0.1 [fe80::1] [fd00::1] [64:ff9b::7f00:1] [2002:7f00:1::1] 224.0.0.1 255.255.255.255);
    my $out = main::outcomes(@urls);
    my $log = Helix::log_count(qr/callback address refused \(/);
    return "$out\nhits: [" . main::hits() . "]\nrefusals logged: $log\n"
        . "metrics: " . main::callback_counts() . "\n";
}
--- response_body eval
join("\n", map { "http://$_:$::LPort/ok completed refused 1" } qw(127.0.0.1 localhost 127.1 2130706433 0x7f.0.0.1 0177.0.0.1
        [::1] [::ffff:127.0.0.1] [::ffff:7f00:1] [::127.0.0.1] 0.0.0.0 [::] 127.0.0.2 10.0.0.1 172.16.0.1 192.168.0.1
        169.254.169.254 100.64.0.1 [fe80::1] [fd00::1] [64:ff9b::7f00:1] [2002:7f00:1::1] 224.0.0.1 255.255.255.255))
. "\nhits: []\nrefusals logged: 24\nmetrics: delivered=0 failed=0 retried=0 refused=24\n"
--- error_log eval
[qr/task \S+: callback address refused \(127\.0\.0\.1, not a public address nor in tasks\.callback_allow\): http:\/\/127\.0\.0\.1:\d+\/ok/,
 qr/callback address refused \(::ffff:127\.0\.0\.1, /, qr/callback address refused \(169\.254\.169\.254, /]



=== TEST 2b: a public address passes the check (nothing answers on the discard port: the callback fails, it is not refused)
--- http_config eval: Helix::http_config()
--- config eval: $::Config
--- user_files eval: main::yaml("  callback_timeout: 3s\n")
--- request
GET /v1/models
--- response_body_filters eval
sub {
    my $out = main::outcomes("http://8.8.8.8:9/", "http://[2001:4860:4860::8888]:9/");
    return "$out\nrefusals logged: " . Helix::log_count(qr/callback address refused/) . "\n";
}
--- response_body
http://8.8.8.8:9/ completed failed 1
http://[2001:4860:4860::8888]:9/ completed failed 1
refusals logged: 0



=== TEST 3: tasks.callback_allow lists loopback: the same callbacks are delivered (an IPv4 network covers IPv4-mapped IPv6, not ::1)
--- http_config eval: Helix::http_config()
--- config eval: $::Config
--- user_files eval: main::yaml("  callback_allow: [127.0.0.0/8]\n")
--- request
GET /v1/models
--- response_body_filters eval
sub {
    main::reset_hits();
    my $out = main::outcomes(map { "http://$_:$::LPort/ok" } qw(127.0.0.1 localhost 2130706433 [::ffff:127.0.0.1] [::1] 10.0.0.1));
    return "$out\nhits: " . main::hits() . "\n";
}
--- response_body eval
"http://127.0.0.1:$::LPort/ok completed delivered 1
http://localhost:$::LPort/ok completed delivered 1
http://2130706433:$::LPort/ok completed delivered 1
http://[::ffff:127.0.0.1]:$::LPort/ok completed delivered 1
http://[::1]:$::LPort/ok completed refused 1
http://10.0.0.1:$::LPort/ok completed refused 1
hits: /ok /ok /ok /ok
"



=== TEST 4: callback_allow as one string (what a single ${VAR} gives), IPv6 networks too
--- http_config eval: Helix::http_config()
--- config eval: $::Config
--- user_files eval: main::yaml("  callback_allow: \${HELIX_TEST_ALLOW}\n")
--- request
GET /v1/models
--- response_body_filters eval
sub {
    main::reset_hits();
    my $out = main::outcomes(map { "http://$_:$::LPort/ok" } qw(127.0.0.1 [::1]));
    return "$out\nhits: " . main::hits() . "\n";
}
--- response_body eval
"http://127.0.0.1:$::LPort/ok completed delivered 1
http://[::1]:$::LPort/ok completed delivered 1
hits: /ok /ok
"



=== TEST 5: a bad network in callback_allow fails nginx -t with file, line and key
--- http_config eval: Helix::http_config()
--- config eval: $::Config
--- user_files eval: main::yaml("  callback_allow:\n    - 10.0.0.0/8\n    - 300.1.2.3/8\n")
--- must_die
--- error_log eval
qr/helix\.yaml:\d+: tasks\.callback_allow\[1\]: invalid network "300\.1\.2\.3\/8"/



=== TEST 6: a 50 MiB answer and an endless one: cut at callback_max_answer, delivered by their status, the worker's memory stays flat
--- http_config eval: Helix::http_config()
--- config eval: $::Config
--- user_files eval: main::yaml("  callback_allow: [127.0.0.0/8]\n  callback_timeout: 60s\n")
--- request
GET /v1/models
--- response_body_filters eval
sub {
    main::reset_hits();
    main::outcomes("http://127.0.0.1:$::LPort/ok");    # warm: the first task's allocations
    my $before = main::rss_kb();
    my $out = main::outcomes(map { "http://127.0.0.1:$::LPort/$_" } qw(huge endless huge endless));
    my $grew = main::rss_kb() - $before;
    # the four callbacks run at once: in no fixed order
    return "$out\nhits: " . join(' ', sort split / /, main::hits()) . "\n"
        . ($before > 0 && $grew < 20 * 1024 ? "rss flat\n" : "rss grew by $grew kB (from $before kB)\n");
}
--- response_body eval
"http://127.0.0.1:$::LPort/huge completed delivered 1
http://127.0.0.1:$::LPort/endless completed delivered 1
http://127.0.0.1:$::LPort/huge completed delivered 1
http://127.0.0.1:$::LPort/endless completed delivered 1
hits: /endless /endless /huge /huge /ok
rss flat
"
--- error_log eval
[qr/callback delivered \(HTTP 200, attempt 1, its long answer cut\)/]



=== TEST 7: a redirect is an answer: not followed, even to an address the allow list would pass
--- http_config eval: Helix::http_config()
--- config eval: $::Config
--- user_files eval: main::yaml("  callback_allow: [127.0.0.0/8]\n")
--- request
GET /v1/models
--- response_body_filters eval
sub {
    main::reset_hits();
    my $out = main::outcomes("http://127.0.0.1:$::LPort/redirect");
    return "$out\nhits: " . main::hits() . "\n";
}
--- response_body eval
"http://127.0.0.1:$::LPort/redirect completed failed 1
hits: /redirect
"
--- error_log eval
[qr/callback to http:\/\/127\.0\.0\.1:\d+\/redirect failed 1 times, given up/]



=== TEST 8: a row from before URLs were checked, with CR/LF in its callback_url: refused, logged escaped, never raw
--- http_config eval: Helix::http_config()
--- config eval: $::Config
--- user_files eval: main::yaml("  callback_allow: [127.0.0.0/8]\n")
--- request
GET /v1/models
--- response_body_filters eval
sub {
    HelixPg::psql("INSERT INTO background_tasks (id, type, payload, callback_url) VALUES "
        . "('t-crlf', 'completion', '{\"prompt\": \"old row\", \"model\": \"gpt-4o\"}', "
        . "E'http://127.0.0.1:$::LPort/ok\\r\\nX-Injected: 1'); NOTIFY helix_tasks;");
    HelixPg::wait_sql("SELECT callback_status FROM background_tasks WHERE id = 't-crlf'", qr/refused|delivered|failed/);
    return HelixPg::psql("SELECT status, callback_status FROM background_tasks WHERE id = 't-crlf'")
        . " raw " . Helix::log_count(qr/^X-Injected/) . "\n";
}
--- response_body
completed|refused raw 0
--- error_log eval
[qr/task t-crlf: callback URL refused \(it must not hold spaces, control or non-ASCII characters\): http:\/\/127\.0\.0\.1:\d+\/ok\\x0D\\x0AX-Injected: 1/]
