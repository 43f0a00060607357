package Test::Nginx::Util;

# nginx process / servroot management for Test::Nginx::Socket (helix test
# suite).  Written from scratch; core Perl only.  See Socket.pm for the
# user-facing documentation.

use strict;
use warnings;

use Cwd ();
use File::Basename ();
use File::Path ();
use File::Spec;
use Fcntl qw(:flock);
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use Time::Local ();

our $VERSION = '0.01';

# ------------------------------------------------------------------------
# configuration (filled by init())
# ------------------------------------------------------------------------

our %Cfg = (
    master         => 0,          # master_process on|off (Test::Nginx default: off)
    workers        => 1,
    worker_connections => 1024,
    log_level      => 'debug',
    env_names      => [],
    binary         => $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx',
    valgrind       => $ENV{TEST_NGINX_USE_VALGRIND} ? 1 : 0,
);

our $Initialized;
our ($ServRoot, $HtmlDir, $LogDir, $ConfDir, $ConfFile, $PidFile, $ErrLog,
     $StderrLog, $Port, $TDir, $LockFh);

# state of the running server
our $MasterPid;     # pid of the nginx master (or single process)
our $ChildPid;      # our direct child (valgrind / foreground mode), needs reaping

sub init {
    return if $Initialized;
    $Initialized = 1;

    my $cwd = Cwd::getcwd();
    if (-d File::Spec->catdir($cwd, 't')) {
        $TDir = File::Spec->catdir($cwd, 't');
    }
    else {
        $TDir = Cwd::abs_path(File::Basename::dirname($0)) // $cwd;
    }

    my $randomize = $ENV{TEST_NGINX_RANDOMIZE};
    if ($ENV{TEST_NGINX_SERVROOT}) {
        $ServRoot = File::Spec->rel2abs($ENV{TEST_NGINX_SERVROOT});
    }
    elsif ($randomize) {
        $ServRoot = File::Spec->catdir($TDir, "servroot_$$");
    }
    else {
        $ServRoot = File::Spec->catdir($TDir, 'servroot');
    }

    $Port = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT};
    if (!$Port) {
        $Port = $randomize ? pick_free_port() : 1984;
    }

    $HtmlDir   = "$ServRoot/html";
    $LogDir    = "$ServRoot/logs";
    $ConfDir   = "$ServRoot/conf";
    $ConfFile  = "$ConfDir/nginx.conf";
    $PidFile   = "$LogDir/nginx.pid";
    $ErrLog    = "$LogDir/error.log";
    $StderrLog = "$LogDir/stderr.log";

    $ENV{TEST_NGINX_SERVER_PORT} = $Port;
    $ENV{TEST_NGINX_PORT}      //= $Port;
    $ENV{TEST_NGINX_SERVROOT}    = $ServRoot;
    $ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;    # what upstream sets
    $ENV{TEST_NGINX_HTML_DIR}    = $HtmlDir;
    $ENV{TEST_NGINX_CONF_DIR}    = $ConfDir;
    $ENV{TEST_NGINX_LOG_DIR}     = $LogDir;
}

# TEST_NGINX_RANDOMIZE servroots are per-process: remove them at exit.
sub cleanup_servroot {
    return unless $Initialized && $ENV{TEST_NGINX_RANDOMIZE} && !$ENV{TEST_NGINX_SERVROOT_KEEP};
    return unless $ServRoot =~ m{/servroot_\d+$} && -d $ServRoot;
    File::Path::remove_tree($ServRoot, { safe => 0 });
}

sub pick_free_port {
    require IO::Socket::INET;
    for (1 .. 50) {
        my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                      LocalPort => 0, Proto => 'tcp', ReuseAddr => 1)
            or next;
        my $p = $s->sockport;
        close $s;
        return $p if $p > 1024;
    }
    return 1984;
}

sub valgrind_factor { $Cfg{valgrind} ? 5 : 1 }

# Serialize test files that share the same servroot (e.g. `prove -j`).
sub acquire_lock {
    return if $LockFh;
    (my $tag = $ServRoot) =~ s{[^\w.-]+}{_}g;
    my $lock = File::Spec->catfile(File::Spec->tmpdir, "test-nginx$tag.lock");
    open($LockFh, '>>', $lock) or return;
    if (!flock($LockFh, LOCK_EX | LOCK_NB)) {
        Test::More::diag("waiting for $lock (another test file uses the same servroot)");
        flock($LockFh, LOCK_EX);
    }
}

# ------------------------------------------------------------------------
# /proc helpers
# ------------------------------------------------------------------------

sub proc_stat {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return;
    my $s = <$fh>;
    close $fh;
    return unless defined $s;
    # pid (comm) state ppid ...
    $s =~ /^\d+ \(.*\) (\S) (\d+)/s or return;
    return ($1, $2);
}

sub process_alive {
    my ($pid) = @_;
    return 0 unless $pid && $pid > 1;
    if (defined $ChildPid && $pid == $ChildPid) {
        my $r = waitpid($ChildPid, WNOHANG);
        if ($r == $ChildPid || $r == -1) {
            $ChildPid = undef;
            return 0;
        }
    }
    return 0 unless kill 0, $pid;
    my ($state) = proc_stat($pid);
    return 0 if defined $state && ($state eq 'Z' || $state eq 'X');
    return 1;
}

sub children_of {
    my ($ppid) = @_;
    my @kids;
    opendir my $dh, '/proc' or return;
    for my $p (readdir $dh) {
        next unless $p =~ /^\d+$/;
        my ($state, $pp) = proc_stat($p);
        next unless defined $pp && $pp == $ppid;
        next if $state eq 'Z' || $state eq 'X';
        push @kids, $p + 0;
    }
    closedir $dh;
    return sort { $a <=> $b } @kids;
}

sub cmdline_of {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/cmdline" or return '';
    local $/;
    my $c = <$fh> // '';
    close $fh;
    $c =~ tr/\0/ /;
    return $c;
}

# Is something LISTENing on 127.0.0.1/0.0.0.0/:: $port ?  Uses /proc/net/tcp*
# (no connection attempt => no noise in error.log).  Falls back to connect().
sub port_listening {
    my ($port) = @_;
    my $hex = sprintf '%04X', $port;
    my $seen_file = 0;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $fh, '<', $f or next;
        $seen_file = 1;
        while (my $l = <$fh>) {
            my @c = split ' ', $l;
            next unless @c > 3;
            next unless $c[3] eq '0A';              # TCP_LISTEN
            return 1 if $c[1] =~ /:$hex$/i;
        }
        close $fh;
    }
    return 0 if $seen_file;
    require IO::Socket::INET;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
                                  Proto => 'tcp', Timeout => 1);
    if ($s) { close $s; return 1 }
    return 0;
}

# ------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------

sub slurp {
    my ($file, $offset) = @_;
    open my $fh, '<', $file or return '';
    binmode $fh;
    if ($offset) { seek $fh, $offset, 0 }
    local $/;
    my $c = <$fh>;
    close $fh;
    return $c // '';
}

sub spew {
    my ($file, $content, $mtime) = @_;
    my $dir = File::Basename::dirname($file);
    File::Path::make_path($dir) unless -d $dir;
    open my $fh, '>', $file or die "cannot write $file: $!";
    binmode $fh;
    print $fh $content;
    close $fh or die "cannot close $file: $!";
    if (defined $mtime) {
        utime $mtime, $mtime, $file;
    }
}

sub error_log_size { -s $ErrLog || 0 }
sub read_error_log { slurp($ErrLog, $_[0]) }
sub read_stderr_log { slurp($StderrLog) }

# user files: arrayref of [relative path, content, mtime(epoch|undef)]
sub write_user_files {
    my ($files) = @_;
    for my $f (@$files) {
        my ($path, $content, $mtime) = @$f;
        my $abs = File::Spec->file_name_is_absolute($path) ? $path : "$HtmlDir/$path";
        spew($abs, $content, $mtime);
    }
}

# Parse the ">>> path [mtime]" format.
sub parse_user_files {
    my ($text) = @_;
    my @files;
    return \@files unless defined $text;
    my $cur;
    for my $line (split /^/m, $text) {
        if ($line =~ /^>>>\s+(\S+)(?:\s+(\d{12}|\d{14}))?\s*$/) {
            my ($path, $ts) = ($1, $2);
            my $mtime;
            if (defined $ts) {
                my ($Y, $m, $d, $H, $M, $S) = $ts =~ /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)?$/;
                $mtime = Time::Local::timelocal($S // 0, $M, $H, $d, $m - 1, $Y);
            }
            $cur = [$path, '', $mtime];
            push @files, $cur;
            next;
        }
        next unless $cur;
        $cur->[1] .= $line;
    }
    return \@files;
}

sub prepare_servroot {
    stop_nginx();
    kill_stale_nginx();
    if (-e $ServRoot) {
        File::Path::remove_tree($ServRoot, { safe => 0 });
    }
    File::Path::make_path($ConfDir, $HtmlDir, $LogDir,
        map { "$ServRoot/$_" } qw(client_body_temp proxy_temp fastcgi_temp uwsgi_temp scgi_temp));
}

# An nginx left behind by an aborted earlier run (pid file in our servroot).
sub kill_stale_nginx {
    return unless -f $PidFile;
    my $pid = slurp($PidFile);
    $pid =~ s/\s+//g;
    return unless $pid =~ /^\d+$/ && process_alive($pid);
    my $cmd = cmdline_of($pid);
    return unless $cmd =~ /nginx|valgrind|memcheck/;
    Test::More::diag("killing stale nginx (pid $pid) left in $ServRoot");
    terminate_pid($pid, 5);
}

# ------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------

sub gen_config {
    my (%b) = @_;
    my $master  = $b{master} // $Cfg{master};
    my $workers = $b{workers} // $Cfg{workers};
    my $level   = $b{log_level} // $Cfg{log_level};
    my $main    = $b{main_config} // '';
    my $http    = $b{http_config} // '';
    my $server  = $b{config} // '';

    my $conf = "# generated by t/lib/Test/Nginx/Socket.pm\n";
    $conf .= "daemon " . ($Cfg{valgrind} || $b{foreground} ? 'off' : 'on') . ";\n";
    $conf .= "master_process " . ($master ? 'on' : 'off') . ";\n";
    $conf .= "worker_processes $workers;\n";
    $conf .= "pid $PidFile;\n";
    $conf .= "error_log $ErrLog $level;\n";
    if ($> == 0 && $main !~ /^\s*user\s/m) {
        $conf .= "user root;\n";
    }
    for my $m (split ' ', $ENV{TEST_NGINX_LOAD_MODULES} // '') {
        $conf .= "load_module " . File::Spec->rel2abs($m) . ";\n";
    }
    for my $e (@{ $Cfg{env_names} }) {
        $conf .= "env $e;\n";
    }
    $conf .= "\n$main\n" if length $main;
    $conf .= "events {\n    worker_connections $Cfg{worker_connections};\n}\n\n";
    $conf .= "http {\n";
    $conf .= "    access_log $LogDir/access.log;\n";
    $conf .= "    default_type text/plain;\n";
    $conf .= "    keepalive_timeout 65;\n";
    $conf .= "    client_body_temp_path $ServRoot/client_body_temp;\n";
    $conf .= "    proxy_temp_path $ServRoot/proxy_temp;\n";
    $conf .= "    fastcgi_temp_path $ServRoot/fastcgi_temp;\n";
    $conf .= "    uwsgi_temp_path $ServRoot/uwsgi_temp;\n";
    $conf .= "    scgi_temp_path $ServRoot/scgi_temp;\n";
    $conf .= "\n$http\n" if length $http;
    $conf .= "\n    server {\n";
    $conf .= "        listen 127.0.0.1:$Port;\n";
    $conf .= "        server_name localhost;\n";
    $conf .= "        client_max_body_size 30m;\n";
    $conf .= "\n$server\n";
    $conf .= "    }\n}\n";
    return $conf;
}

sub write_config {
    my (%b) = @_;
    spew($ConfFile, gen_config(%b));
}

# ------------------------------------------------------------------------
# start / stop
# ------------------------------------------------------------------------

sub nginx_cmd {
    my @cmd = ($Cfg{binary}, '-p', "$ServRoot/", '-c', $ConfFile);
    return @cmd unless $Cfg{valgrind};
    my @vg = ('valgrind', '--tool=memcheck', '--leak-check=full',
              '--show-possibly-lost=no', '--errors-for-leak-kinds=definite',
              '--num-callers=30', '--error-exitcode=42', '--trace-children=yes',
              "--log-file=$LogDir/valgrind.%p.log");
    my $supp = $ENV{TEST_NGINX_VALGRIND_SUPPRESS} // "$TDir/valgrind.suppress";
    push @vg, "--suppressions=$supp" if -f $supp;
    return (@vg, @cmd);
}

sub spawn {
    my (@cmd) = @_;
    my $pid = fork;
    die "fork failed: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $StderrLog;
        open STDERR, '>>', $StderrLog;
        { no warnings 'exec'; exec { $cmd[0] } @cmd; }
        print STDERR "exec $cmd[0] failed: $!\n";
        POSIX::_exit(127);
    }
    return $pid;
}

sub wait_child {
    my ($pid, $timeout) = @_;
    my $deadline = time + $timeout;
    while (1) {
        my $r = waitpid($pid, WNOHANG);
        return $? if $r == $pid;
        return -1 if $r == -1;
        return undef if time > $deadline;
        sleep 0.01;
    }
}

sub read_pid_file {
    my $p = slurp($PidFile);
    $p =~ s/\s+//g;
    return $p =~ /^\d+$/ ? $p : undef;
}

sub wait_port_free {
    my ($timeout) = @_;
    my $deadline = time + $timeout;
    while (port_listening($Port)) {
        return 0 if time > $deadline;
        sleep 0.05;
    }
    return 1;
}

# start_nginx(must_die => bool)
# returns hashref: { ok => 1 } when nginx runs; otherwise { ok => 0,
# exited => bool, status => $?, error => text }.
sub start_nginx {
    my (%o) = @_;
    my $f = valgrind_factor();

    if (!wait_port_free(10)) {
        return { ok => 0, error => "port $Port is still in use by another process ("
                 . "set TEST_NGINX_SERVER_PORT or TEST_NGINX_RANDOMIZE=1)" };
    }

    my @cmd = nginx_cmd();
    if (!$Cfg{valgrind}) {
        # daemon on: the launcher exits once the daemon is forked (or on error)
        my $pid = spawn(@cmd);
        my $st = wait_child($pid, 30);
        if (!defined $st) {
            kill 'KILL', $pid;
            waitpid($pid, 0);
            return { ok => 0, exited => 0, error => "nginx launcher did not return within 30s" };
        }
        if ($st != 0) {
            return { ok => 0, exited => 1, status => $st,
                     error => "nginx exited with status " . ($st >> 8) . ($st & 127 ? " (signal " . ($st & 127) . ")" : '') };
        }
        my $deadline = time + 10;
        my $mp;
        while (!($mp = read_pid_file()) || !port_listening($Port)) {
            if (time > $deadline) {
                return { ok => 0, exited => 0, error => "nginx did not write its pid file / listen on port $Port within 10s" };
            }
            sleep 0.01;
        }
        $MasterPid = $mp;
        return { ok => 1 };
    }

    # valgrind: nginx runs in the foreground (daemon off) as our child
    my $pid = spawn(@cmd);
    $ChildPid = $pid;
    my $deadline = time + 60;
    while (1) {
        my $r = waitpid($pid, WNOHANG);
        if ($r == $pid) {
            my $st = $?;
            $ChildPid = undef;
            return { ok => 0, exited => 1, status => $st,
                     error => "nginx (under valgrind) exited with status " . ($st >> 8) };
        }
        if (port_listening($Port) && read_pid_file()) {
            $MasterPid = $pid;
            return { ok => 1 };
        }
        if (time > $deadline) {
            $MasterPid = $pid;
            return { ok => 0, exited => 0, error => "nginx (under valgrind) not listening on port $Port after 60s" };
        }
        sleep 0.05;
    }
}

sub wait_gone {
    my ($pid, $timeout) = @_;
    my $deadline = time + $timeout;
    while (process_alive($pid)) {
        return 0 if time > $deadline;
        sleep 0.02;
    }
    return 1;
}

# QUIT -> TERM -> KILL (master and its children)
sub terminate_pid {
    my ($pid, $timeout) = @_;
    my @kids = children_of($pid);
    kill 'QUIT', $pid;
    my $ok = wait_gone($pid, $timeout);
    my $msg;
    if (!$ok) {
        $msg = "nginx (pid $pid) did not exit within ${timeout}s after SIGQUIT; sending SIGTERM";
        push @kids, children_of($pid);
        kill 'TERM', $pid;
        if (!wait_gone($pid, $timeout)) {
            $msg .= "; sending SIGKILL";
            push @kids, children_of($pid);
            kill 'KILL', $pid;
            wait_gone($pid, 5);
        }
    }
    for my $k (@kids) {
        if (process_alive($k)) {
            kill 'KILL', $k;
        }
    }
    if (defined $ChildPid && $ChildPid == $pid) {
        waitpid($ChildPid, 0);
        $ChildPid = undef;
    }
    return ($ok, $msg);
}

# Graceful stop.  Returns ($ok, $warning_message, $died_on_its_own).
sub stop_nginx {
    my $pid = $MasterPid;
    $pid = $ChildPid if !defined $pid;
    if (!defined $pid) {
        return (1);
    }
    $MasterPid = undef;
    if (!process_alive($pid)) {
        if (defined $ChildPid) { waitpid($ChildPid, 0); $ChildPid = undef }
        # it was running when the block started: it died on its own
        return (1, "nginx (pid $pid) was already gone before SIGQUIT", 1);
    }
    my $t = ($ENV{TEST_NGINX_STOP_TIMEOUT} || 5) * valgrind_factor();
    my ($ok, $msg) = terminate_pid($pid, $t);
    return ($ok, $msg);
}

sub nginx_running { defined $MasterPid && process_alive($MasterPid) }

# Reload (SIGHUP) and wait until the new configuration serves requests or
# the reload was rejected.  Returns hashref { ok, rejected, error }.
sub reload_nginx {
    my (%o) = @_;
    my $timeout = $o{timeout} // 10 * valgrind_factor();
    my $master  = $o{master};
    my $level   = $o{log_level} // $Cfg{log_level};
    my $pid = $MasterPid;
    return { ok => 0, error => 'nginx is not running' } unless $pid && process_alive($pid);

    my $offset = error_log_size();
    my @old = $master ? children_of($pid) : ();
    my $log_ok = $level =~ /^(?:debug|info|notice)$/;

    kill 'HUP', $pid;
    my $deadline = time + $timeout;
    while (1) {
        my $log = read_error_log($offset);
        if ($log =~ /^(.*\[emerg\].*)$/m) {
            return { ok => 1, rejected => 1, message => $1 };
        }
        if ($log_ok) {
            if ($log =~ /\[notice\] \d+#\d+: reconfiguring/) {
                my $post = substr($log, $-[0]);
                if (!$master) {
                    return { ok => 1 };
                }
                if ($post =~ /start worker process \d+/) {
                    my $all = 1;
                    for my $w (@old) {
                        next unless process_alive($w);
                        next if $post =~ /\b$w#\d+: gracefully shutting down/;
                        $all = 0;
                        last;
                    }
                    return { ok => 1 } if $all;
                }
            }
        }
        else {
            # log level too high for notices: watch the process tree instead
            if (!$master) {
                sleep 0.5;
                return { ok => 1 };
            }
            my %old = map { $_ => 1 } @old;
            my @new = grep { !$old{$_} } children_of($pid);
            my @old_alive = grep { process_alive($_) } @old;
            return { ok => 1 } if @new && !@old_alive;
        }
        if (!process_alive($pid)) {
            return { ok => 0, error => 'nginx master exited during reload' };
        }
        if (time > $deadline) {
            return { ok => 0, error => "reload not finished after ${timeout}s" };
        }
        sleep 0.02;
    }
}

# ------------------------------------------------------------------------
# valgrind
# ------------------------------------------------------------------------

# Returns list of [file, reason, excerpt] for problematic valgrind logs.
sub check_valgrind_logs {
    my (%o) = @_;
    my @bad;
    opendir my $dh, $LogDir or return;
    my @files = sort grep { /^valgrind\.\d+\.log$/ } readdir $dh;
    closedir $dh;
    for my $f (@files) {
        my $text = slurp("$LogDir/$f");
        my @reasons;
        my $mem_err = qr/Invalid (?:read|write|free)|uninitialised|Mismatched free|Source and destination overlap|Jump to the invalid address|Process terminating with default action/;
        if ($text =~ $mem_err) {
            push @reasons, 'memory error';
        }
        if (!$o{ignore_leaks}) {
            if ($text =~ /ERROR SUMMARY: (\d+) errors/ && $1 > 0) {
                push @reasons, "ERROR SUMMARY: $1 errors";
            }
            if ($text =~ /definitely lost: ([\d,]+) bytes/ && $1 ne '0') {
                push @reasons, "definitely lost: $1 bytes";
            }
        }
        if ($text !~ /ERROR SUMMARY/) {
            # process killed (SIGKILL) before valgrind could summarize
            push @bad, [$f, 'no ERROR SUMMARY (process killed?)', '', 1];
        }
        next unless @reasons;
        my @lines = grep { !/^==\d+==\s*$/ } split /\n/, $text;
        my $excerpt = join "\n", @lines[0 .. ($#lines < 200 ? $#lines : 200)];
        push @bad, [$f, join('; ', @reasons), $excerpt, 0];
    }
    return @bad;
}

1;
