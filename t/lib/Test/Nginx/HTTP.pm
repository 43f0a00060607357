package Test::Nginx::HTTP;

# Minimal raw-socket HTTP/1.x client used by Test::Nginx::Socket.
# Written from scratch for the helix test-suite (core Perl only).
#
#   my $res = Test::Nginx::HTTP::send_raw(
#       host => '127.0.0.1', port => 1984,
#       packets => [ "GET / HTTP/1.1\r\nHost: x\r\n\r\n" ],  # or {value=>..., delay_before=>secs}
#       timeout => 10, head => 0);
#
# $res is a hashref:
#   status, reason, version, headers (lower-cased name => value, repeated
#   headers joined with ", "), header_list ([name, value] in order),
#   raw_headers (status line + header lines, CRLF separated, without the
#   final empty line), body (de-chunked), raw (everything received),
#   chunks (arrayref of chunk payloads when chunked), timed_out, error
#   (connect/IO error text), incomplete (text describing a truncated body),
#   complete (1 when the message framing said the response was complete).

use strict;
use warnings;

use IO::Socket::INET;
use IO::Select;
use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use Time::HiRes qw(time sleep);

our $VERSION = '0.01';

sub build_request {
    my (%a) = @_;
    my $method  = $a{method} // 'GET';
    my $uri     = $a{uri} // '/';
    my $ver     = $a{http_ver} // 'HTTP/1.1';
    my $body    = $a{body};
    my $headers = $a{headers} // [];    # arrayref of [name, value]

    if (defined $body && utf8::is_utf8($body)) {
        $body = "$body";
        utf8::encode($body);
    }

    my %have;
    $have{ lc $_->[0] } = 1 for @$headers;

    my $req = "$method $uri $ver\r\n";
    $req .= "Host: localhost\r\n" unless $have{host};
    $req .= "Connection: close\r\n" unless $have{connection};
    $req .= "$_->[0]: $_->[1]\r\n" for @$headers;

    if (!$have{'content-length'} && !$have{'transfer-encoding'}) {
        if (defined $body && length $body) {
            $req .= "Content-Length: " . length($body) . "\r\n";
        }
        elsif ($method =~ /^(?:POST|PUT|PATCH)$/) {
            $req .= "Content-Length: 0\r\n";
        }
    }
    $req .= "\r\n";
    utf8::encode($req) if utf8::is_utf8($req);
    $req .= $body if defined $body;
    return $req;
}

sub send_raw {
    my (%a) = @_;
    my $host    = $a{host} // '127.0.0.1';
    my $port    = $a{port} or die "send_raw: port required";
    my $timeout = $a{timeout} // 10;
    my $packets = $a{packets} // [];
    my $deadline = time + $timeout;
    local $SIG{PIPE} = 'IGNORE';

    my %res = (raw => '', body => '', headers => {}, header_list => []);

    my $sock = IO::Socket::INET->new(
        PeerAddr => $host,
        PeerPort => $port,
        Proto    => 'tcp',
        Timeout  => ($timeout > 0 ? $timeout : 1),
    );
    if (!$sock) {
        $res{error} = "cannot connect to $host:$port: " . ($@ || $!);
        if (time >= $deadline) { $res{timed_out} = 1 }
        return \%res;
    }
    $sock->autoflush(1);
    $sock->blocking(0);
    binmode $sock;

    my $sel = IO::Select->new($sock);

    # ---- write ----
  PACKET:
    for my $p (@$packets) {
        my ($data, $delay) = ref $p eq 'HASH' ? ($p->{value}, $p->{delay_before}) : ($p, undef);
        $data //= '';
        if (utf8::is_utf8($data)) { $data = "$data"; utf8::encode($data) }
        if ($delay) {
            my $left = $deadline - time;
            sleep($delay < $left ? $delay : ($left > 0 ? $left : 0));
        }
        my $off = 0;
        while ($off < length $data) {
            my $left = $deadline - time;
            if ($left <= 0) { $res{timed_out} = 1; last PACKET }
            my @w = $sel->can_write($left);
            if (!@w) { next }
            my $n = syswrite($sock, $data, length($data) - $off, $off);
            if (!defined $n) {
                next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
                # the server may already have answered (e.g. 413) and closed
                $res{write_error} = "write failed: $!";
                last PACKET;
            }
            $off += $n;
        }
    }

    # ---- read ----
    my $eof = 0;
    if (!$res{timed_out}) {
        while (1) {
            my $left = $deadline - time;
            if ($left <= 0) { $res{timed_out} = 1; last }
            my @r = $sel->can_read($left);
            next unless @r;
            my $buf;
            my $n = sysread($sock, $buf, 65536);
            if (!defined $n) {
                next if $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
                $res{read_error} = "read failed: $!";
                $eof = 1;
                last;
            }
            if ($n == 0) { $eof = 1; last }
            $res{raw} .= $buf;
            my $p = parse_response($res{raw}, $a{head}, 0);
            last if $p->{complete};
        }
    }
    close $sock;

    my $p = parse_response($res{raw}, $a{head}, $eof);
    %res = (%res, %$p);
    if (!$res{complete} && !$res{timed_out} && $res{headers_done}) {
        $res{incomplete} //= 'connection closed before the response body was complete';
    }
    if (!$res{headers_done} && !$res{timed_out} && !$res{error}) {
        $res{error} = length $res{raw}
            ? 'malformed or truncated response header'
            : 'empty response (connection closed without data)';
    }
    return \%res;
}

# parse_response($raw, $is_head, $eof) -> hashref (see top of file).
sub parse_response {
    my ($raw, $is_head, $eof) = @_;
    my %r = (headers => {}, header_list => [], body => '');

    my $data = $raw;
    while (1) {
        my $end = index($data, "\r\n\r\n");
        return \%r if $end < 0;
        my $head = substr($data, 0, $end);
        my $rest = substr($data, $end + 4);
        my @lines = split /\r\n/, $head;
        my $status_line = shift(@lines) // '';
        if ($status_line !~ m{^HTTP/(\d+\.\d+)\s+(\d{3})(?:\s+(.*))?$}) {
            $r{error} = "bad status line: $status_line";
            return \%r;
        }
        my ($ver, $code, $reason) = ($1, $2, $3 // '');
        if ($code =~ /^1/ && $code != 101) {    # 100-continue, 103 ...
            $data = $rest;
            next;
        }
        @r{qw(version status reason raw_headers)} = ($ver, $code + 0, $reason, $head);
        my @hl;
        for my $l (@lines) {
            if ($l =~ /^[ \t]+(.*)$/ && @hl) {    # obsolete line folding
                $hl[-1][1] .= " $1";
                next;
            }
            my ($k, $v) = split /:[ \t]*/, $l, 2;
            $v //= '';
            $v =~ s/[ \t]+$//;
            push @hl, [$k, $v];
        }
        $r{header_list} = \@hl;
        for my $h (@hl) {
            my $k = lc $h->[0];
            $r{headers}{$k} = exists $r{headers}{$k} ? "$r{headers}{$k}, $h->[1]" : $h->[1];
        }
        $r{headers_done} = 1;

        if ($is_head || $code == 204 || $code == 304) {
            $r{complete} = 1;
            $r{extra} = $rest if length $rest;
            return \%r;
        }
        my $te = $r{headers}{'transfer-encoding'};
        if (defined $te && $te =~ /chunked/i) {
            my ($body, $done, $err, $chunks, $extra) = dechunk($rest);
            $r{body}   = $body;
            $r{chunks} = $chunks;
            $r{complete} = $done;
            $r{chunked}  = 1;
            $r{extra} = $extra if defined $extra && length $extra;
            if ($err) { $r{incomplete} = $err; $r{complete} = 1 if $eof }
            elsif (!$done && $eof) { $r{incomplete} = 'chunked body truncated (no last chunk)' }
            return \%r;
        }
        my $cl = $r{headers}{'content-length'};
        if (defined $cl && $cl =~ /^\s*(\d+)/) {
            $cl = $1;
            if (length($rest) >= $cl) {
                $r{body} = substr($rest, 0, $cl);
                $r{extra} = substr($rest, $cl) if length($rest) > $cl;
                $r{complete} = 1;
            }
            else {
                $r{body} = $rest;
                $r{incomplete} = "body truncated: got " . length($rest) . " of $cl bytes" if $eof;
            }
            return \%r;
        }
        # read until close
        $r{body} = $rest;
        $r{complete} = 1 if $eof;
        return \%r;
    }
}

# dechunk($data) -> ($body, $complete, $error, \@chunks, $extra)
sub dechunk {
    my ($data) = @_;
    my $body = '';
    my @chunks;
    my $pos = 0;
    while (1) {
        my $eol = index($data, "\r\n", $pos);
        return ($body, 0, undef, \@chunks) if $eol < 0;
        my $line = substr($data, $pos, $eol - $pos);
        if ($line !~ /^\s*([0-9a-fA-F]+)\s*(?:;.*)?$/) {
            return ($body, 0, "bad chunk size line: \"$line\"", \@chunks);
        }
        my $size = hex $1;
        $pos = $eol + 2;
        if ($size == 0) {
            # trailers, terminated by an empty line
            while (1) {
                my $e = index($data, "\r\n", $pos);
                return ($body, 0, undef, \@chunks) if $e < 0;
                my $t = substr($data, $pos, $e - $pos);
                $pos = $e + 2;
                last if $t eq '';
            }
            return ($body, 1, undef, \@chunks, substr($data, $pos));
        }
        return ($body, 0, undef, \@chunks) if length($data) < $pos + $size + 2;
        my $chunk = substr($data, $pos, $size);
        $body .= $chunk;
        push @chunks, $chunk;
        $pos += $size;
        if (substr($data, $pos, 2) ne "\r\n") {
            return ($body, 0, "missing CRLF after chunk data", \@chunks);
        }
        $pos += 2;
    }
}

1;
