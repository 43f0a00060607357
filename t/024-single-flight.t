# Single flight: a burst of identical requests makes exactly one provider
# call, every round, with L2 off and on, for streams too, and across two
# nginx sharing Redis.  Each round sends its burst at once (curl --parallel)
# with a new prompt that makes the mock answer after 200 ms, and counts
# the calls that reached the provider (the mock's stats) and the answers.
use Test::Nginx::Socket 'no_plan';
use Helix;

master_on();
workers(2);

our $Port2 = $ENV{TEST_NGINX_SERVER_PORT} + 10;
our $Dir2 = "/tmp/helix-sf-second-$$";
our $Mock = "http://127.0.0.1:$ENV{TEST_NGINX_OPENAI_PORT}/_mock";

our $HttpConfig = Helix::http_config(keepalive => 256);
our $Config = Helix::config();

sub yaml {
    my ($l2) = @_;
    my $y = ">>> helix.yaml\n$Helix::Providers";
    $y .= "redis:\n  host: 127.0.0.1\n  port: $ENV{TEST_NGINX_REDIS_PORT}\n"
        . "cache:\n  l2:\n    enabled: true\n" if $l2;
    return $y;
}

sub mock_total {
    my $s = `curl -s $Mock/stats`;
    my ($t) = $s =~ /"total":(\d+)/;
    return $t // -1;
}

# one burst: n identical requests at once, spread over the ports given;
# returns the number of answers that were whole
sub burst {
    my ($n, $stream, $prompt, @ports) = @_;
    my $body = qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "$prompt MOCK_LATENCY_MS:200"}])
          . ($stream ? qq(, "stream": true}) : "}");
    my $cfg = "/tmp/helix-sf-burst-$$.cfg";
    my $out = "/tmp/helix-sf-out-$$";
    system("rm -rf $out; mkdir -p $out");
    open my $fh, '>', $cfg or die;
    for my $i (1 .. $n) {
        my $port = $ports[$i % @ports];
        (my $esc = $body) =~ s/(["\\])/\\$1/g;
        print $fh "url = \"http://127.0.0.1:$port/v1/chat/completions\"\n"
            . "header = \"Content-Type: application/json\"\n"
            . "data = \"$esc\"\n"
            . "output = \"$out/$i\"\n"
            . "max-time = 20\n";
        print $fh "next\n" if $i < $n;
    }
    close $fh;
    system("curl -s -Z --parallel-immediate --parallel-max $n -K $cfg 2>/dev/null");
    my $whole = 0;
    for my $i (1 .. $n) {
        open my $in, '<', "$out/$i" or next;
        local $/;
        my $a = <$in>;
        close $in;
        if ($stream) {
            $whole++ if $a =~ /"finish_reason":"stop"/ && $a =~ /data: \[DONE\]\s*$/;
        } else {
            $whole++ if $a =~ /"object":"chat.completion".*Mock answer/s;
        }
    }
    system("rm -rf $out $cfg");
    return $whole;
}

# rounds of bursts: "calls/answers" per round, e.g. "1/20 1/20 1/20"
sub rounds {
    my ($rounds, $n, $stream, @ports) = @_;
    my @r;
    for my $k (1 .. $rounds) {
        my $before = mock_total();
        my $whole = burst($n, $stream, "sf $$ " . time() . " $k $n $stream @ports", @ports);
        # every answer has come back: the count is final
        my $after = mock_total();
        push @r, ($after - $before) . "/$whole";
    }
    return join ' ', @r;
}

sub expect { my ($rounds, $n) = @_; return join(' ', ("1/$n") x $rounds); }

sub start_second {
    my $yaml = "$ENV{TEST_NGINX_SERVER_ROOT}/html/helix.yaml";
    system("mkdir -p $Dir2/conf $Dir2/logs");
    open my $fh, '>', "$Dir2/conf/nginx.conf" or die;
    print $fh "load_module $ENV{TEST_NGINX_LOAD_MODULES};\npid logs/nginx.pid;\n"
        . "worker_processes 2;\nerror_log logs/error.log;\nevents {}\nhttp {\n"
        . "client_body_temp_path $Dir2/body;\nproxy_temp_path $Dir2/proxy;\n"
        . Helix::http_config(keepalive => 256, loopback => $Port2) =~ s{\.\./html/helix\.yaml}{$yaml}r
        . "server {\nlisten 127.0.0.1:$Port2;\n" . Helix::config() . "}\n}\n";
    close $fh;
    system("$ENV{TEST_NGINX_BINARY} -p $Dir2/ -c conf/nginx.conf") == 0
        or return 0;
    for (1 .. 200) {    # until it answers
        return 1 if `curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$Port2/v1/models` eq '200';
        select(undef, undef, undef, 0.05);
    }
    return 0;
}

sub stop_second {
    return unless -e "$Dir2/logs/nginx.pid";
    system("kill -QUIT `cat $Dir2/logs/nginx.pid` 2>/dev/null");
    for (1 .. 200) { last unless -e "$Dir2/logs/nginx.pid"; select(undef, undef, undef, 0.05); }
    system("rm -rf $Dir2");
}

# the second node goes whatever happens to this file
END { stop_second(); }

no_shuffle();
run_tests();

__DATA__

=== TEST 1: L2 off: 10 rounds of 20 identical requests, one provider call each
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(0)
--- request
GET /v1/models
--- response_body_filters eval
sub { main::rounds(10, 20, 0, $ENV{TEST_NGINX_SERVER_PORT}) }
--- response_body eval: main::expect(10, 20)
--- no_error_log
[alert]



=== TEST 2: L2 on: 10 rounds of 20, one call each (the claim comes before Redis)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(1)
--- request
GET /v1/models
--- response_body_filters eval
sub { main::rounds(10, 20, 0, $ENV{TEST_NGINX_SERVER_PORT}) }
--- response_body eval: main::expect(10, 20)
--- no_error_log
[alert]



=== TEST 3: L2 on: 3 rounds of 100
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(1)
--- request
GET /v1/models
--- response_body_filters eval
sub { main::rounds(3, 100, 0, $ENV{TEST_NGINX_SERVER_PORT}) }
--- response_body eval: main::expect(3, 100)
--- no_error_log
[alert]



=== TEST 4: L2 off: 3 rounds of 100
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(0)
--- request
GET /v1/models
--- response_body_filters eval
sub { main::rounds(3, 100, 0, $ENV{TEST_NGINX_SERVER_PORT}) }
--- response_body eval: main::expect(3, 100)
--- no_error_log
[alert]



=== TEST 5: streams, L2 on and off: one call per round, every client gets the whole stream
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(1)
--- request
GET /v1/models
--- response_body_filters eval
sub { main::rounds(5, 20, 1, $ENV{TEST_NGINX_SERVER_PORT}) }
--- response_body eval: main::expect(5, 20)
--- no_error_log
[alert]



=== TEST 6: streams with L2 off
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(0)
--- request
GET /v1/models
--- response_body_filters eval
sub { main::rounds(5, 20, 1, $ENV{TEST_NGINX_SERVER_PORT}) }
--- response_body eval: main::expect(5, 20)
--- no_error_log
[alert]



=== TEST 7: two nginx on one Redis: 10 rounds of 20 spread over both, one call each
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(1)
--- request
GET /v1/models
--- response_body_filters eval
sub { main::start_second() or return "second node did not start";
      my $r = main::rounds(10, 20, 0, $ENV{TEST_NGINX_SERVER_PORT}, $::Port2);
      $r .= " | " . main::rounds(3, 100, 0, $ENV{TEST_NGINX_SERVER_PORT}, $::Port2);
      $r .= " | " . main::rounds(3, 20, 1, $ENV{TEST_NGINX_SERVER_PORT}, $::Port2);
      main::stop_second(); $r }
--- response_body eval: main::expect(10, 20) . " | " . main::expect(3, 100) . " | " . main::expect(3, 20)
--- no_error_log
[alert]
