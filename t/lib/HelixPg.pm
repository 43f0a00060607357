package HelixPg;

# PostgreSQL for the database tests: the suite's server (util/test.sh
# starts it on TEST_NGINX_PG_PORT, state in build/test/postgres), a fresh
# schema per test file (util/migrate.sh --reset), psql for what the test
# reads, and stop/start for outages.  Waits poll for a condition, never
# sleep-and-hope.

use strict;
use warnings;

our $Port = $ENV{TEST_NGINX_PG_PORT};
our $Dir = 'build/test/postgres';

sub psql {
    my ($sql) = @_;
    $sql =~ s/'/'\\''/g;
    my $out = `PGCONNECT_TIMEOUT=5 psql -X -q -tA -h 127.0.0.1 -p $Port -U postgres -d helixagent -c '$sql' 2>&1`;
    chomp $out;
    return $out;
}

sub reset {
    system("PGPORT=$Port util/migrate.sh --reset >/dev/null") == 0
        or die "util/migrate.sh failed";
}

# polls until $sql returns something matching $re (or 20 s); returns it
sub wait_sql {
    my ($sql, $re, $secs) = @_;
    my $out = '';
    for (1 .. ($secs // 20) * 20) {
        $out = psql($sql);
        return $out if $out =~ $re;
        select(undef, undef, undef, 0.05);
    }
    return $out;
}

sub stop { system("util/services.sh stop postgres $Dir >/dev/null 2>&1"); }

sub start {
    system("util/services.sh start postgres $Port $Dir >/dev/null 2>&1") == 0
        or die "postgres did not start again";
}

# the database block of helix.yaml, plus whatever the test adds
sub yaml {
    my ($extra) = @_;
    return "database:\n  host: 127.0.0.1\n  port: $Port\n  name: helixagent\n"
        . "  user: postgres\n" . ($extra // '');
}

# curl from a test: (status, body)
sub curl {
    my ($method, $url, $body, @headers) = @_;
    my $h = join ' ', map { "-H '$_'" } @headers;
    my $d = defined $body ? "--data-binary '$body'" : '';
    my $out = `curl -s -m 30 -X $method $h $d -w '\\n%{http_code}' '$url'`;
    my ($b, $code) = $out =~ /^(.*)\n(\d+)$/s;
    return ($code // 0, $b // '');
}

1;
