# An admin cache clear on one node clears L2 for all and L1 on every node:
# L1 is per node (shared memory), so the clear is PUBLISHed on Redis
# ("helix:cache:clear") and one worker of every node, SUBSCRIBEd, drops
# its entries.  Two nginx on loopback share the suite's Redis: node A is
# the test's own, node B a second nginx started here on the port
# TEST_NGINX_SERVER_PORT + 17.  How long node B took to hear of the clear
# goes to the test's diagnostics.
use Test::Nginx::Socket 'no_plan';
use Time::HiRes qw(time);
use Helix;

our $RPort = $ENV{TEST_NGINX_REDIS_PORT};
our $PortA = $ENV{TEST_NGINX_SERVER_PORT};
our $PortB = $PortA + 17;
our $DirB = "/tmp/helix-test-clear-b-$$";
our $Admin = 'adm1n-0123456789abcdef0123456789abcdef';

add_cleanup_handler(sub { Helix::stop_nginx_in($DirB); system("rm -rf $DirB"); });

sub redis_cli { my (@args) = @_; my $a = join ' ', map { "'$_'" } @args;
    my $out = `redis-cli -p $RPort $a 2>&1`; chomp $out; return $out; }

sub wait_for {
    my ($ok) = @_;
    for (1 .. 600) {
        return 1 if $ok->();
        select(undef, undef, undef, 0.02);
    }
    return 0;
}

sub log_has {
    my ($file, $re) = @_;
    open my $fh, '<', $file or return 0;
    while (my $l = <$fh>) { return 1 if $l =~ $re; }
    return 0;
}

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => "    location = /v1/admin/cache/clear { helix_endpoint cache_clear; }\n");

our $Yaml = ">>> helix.yaml\n$Helix::Providers\nadmin:\n  token: $Admin\n"
    . "cache:\n  l2:\n    enabled: true\n"
    . "redis:\n  host: 127.0.0.1\n  port: $RPort\n";

sub start_b {
    my $yaml = "$ENV{TEST_NGINX_SERVER_ROOT}/html/helix.yaml";
    system("mkdir -p $DirB/conf $DirB/logs");
    open my $fh, '>', "$DirB/conf/nginx.conf" or die;
    print $fh "load_module $ENV{TEST_NGINX_LOAD_MODULES};\npid logs/nginx.pid;\n"
        . "error_log logs/error.log info;\nworker_processes 2;\nevents {}\nhttp {\n"
        . "client_body_temp_path $DirB/body;\nproxy_temp_path $DirB/proxy;\n"
        . Helix::http_config(loopback => $PortB) =~ s{\.\./html/helix\.yaml}{$yaml}r
        . "server {\nlisten 127.0.0.1:$PortB;\n$::Config}\n}\n";
    close $fh;
    system("$ENV{TEST_NGINX_BINARY} -p $DirB/ -c conf/nginx.conf") == 0 or return 0;
    return 1;
}

# one chat completion on a node: "<status> <X-Cache> <X-Cache-Tier>"
sub chat {
    my ($port, $c) = @_;
    my $out = `curl -s -m 30 -D - -o /dev/null --data-binary '{"model": "gpt-4o", "messages": [{"role": "user", "content": "$c $$"}]}' http://127.0.0.1:$port/v1/chat/completions`;
    my ($code) = $out =~ m{^HTTP/\S+ (\d+)};
    my ($xc) = $out =~ /^X-Cache: (\w+)/mi;
    my ($tier) = $out =~ /^X-Cache-Tier: (\w+)/mi;
    return join ' ', $code // 0, $xc // '-', $tier // '-';
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a clear on node A: node B's L1 entry goes too (heard through Redis), and L2 is empty for both
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
GET /v1/models
--- response_body_filters eval
sub {
    my @r;
    my $sub = qr/redis: subscribed to "helix:cache:clear"/;
    push @r, "B started: " . (main::start_b() ? "yes" : "no");
    push @r, "both subscribed: " . (main::wait_for(sub {
        Helix::log_count($sub) && main::log_has("$::DirB/logs/error.log", $sub) }) ? "yes" : "no");
    push @r, "A: " . main::chat($::PortA, "shared");
    main::wait_for(sub { main::redis_cli('--scan', '--pattern', 'completion:*') =~ /\S/ });
    push @r, "B: " . main::chat($::PortB, "shared");
    push @r, "B again: " . main::chat($::PortB, "shared");
    my $t0 = time;
    my $ans = `curl -s -m 30 -X POST -H 'Authorization: Bearer $::Admin' http://127.0.0.1:$::PortA/v1/admin/cache/clear`;
    my $t1 = time;
    push @r, "clear on A: " . ($ans =~ /"l2":[1-9]/ ? "L2 keys removed" : $ans);
    my $heard = main::wait_for(sub { main::log_has("$::DirB/logs/error.log",
        qr/cache clear from redis \(all\): 1 L1 entries removed/) });
    my $t2 = time;
    Test::More::diag(sprintf("the clear's answer on A took %.1f ms; node B had dropped its L1 entry "
        . "%.1f ms after that answer (polled every 20 ms)", 1000 * ($t1 - $t0), 1000 * ($t2 - $t1)));
    push @r, "B heard: " . ($heard ? "yes" : "no");
    push @r, "B after: " . main::chat($::PortB, "shared");
    return join("\n", @r) . "\n";
}
--- response_body
B started: yes
both subscribed: yes
A: 200 MISS -
B: 200 HIT L2
B again: 200 HIT L1
clear on A: L2 keys removed
B heard: yes
B after: 200 MISS -
--- error_log
cache clear from redis (all): 0 L1 entries removed
--- no_error_log
[alert]
--- timeout: 60



=== TEST 2: a pattern clear reaches node B with its pattern; a message with control characters is ignored
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
GET /v1/models
--- response_body_filters eval
sub {
    my @r;
    my $sub = qr/redis: subscribed to "helix:cache:clear"/;
    main::wait_for(sub { Helix::log_count($sub) });
    push @r, "B: " . main::chat($::PortB, "pattern");
    push @r, "B again: " . main::chat($::PortB, "pattern");
    main::redis_cli('PUBLISH', 'helix:cache:clear', "completion:*\x01");
    push @r, "ignored: " . (main::wait_for(sub { Helix::log_count(qr/cache clear from redis ignored: a control character/) }) ? "yes" : "no");
    my $ans = `curl -s -m 30 -X POST -H 'Authorization: Bearer $::Admin' --data-binary '{"pattern": "completion:openai:*"}' http://127.0.0.1:$::PortA/v1/admin/cache/clear`;
    push @r, "B heard: " . (main::wait_for(sub { main::log_has("$::DirB/logs/error.log",
        qr/cache clear from redis \(pattern completion:openai:\*\): [1-9]\d* L1 entries removed/) }) ? "yes" : "no");
    push @r, `grep 'cache clear' $::DirB/logs/error.log` if $r[-1] =~ /no$/;
    push @r, "B after: " . main::chat($::PortB, "pattern");
    # the suite's Redis as this file found it: no L2 keys of ours left
    `curl -s -m 30 -X POST -H 'Authorization: Bearer $::Admin' http://127.0.0.1:$::PortA/v1/admin/cache/clear`;
    return join("\n", @r) . "\n";
}
--- response_body
B: 200 MISS -
B again: 200 HIT L1
ignored: yes
B heard: yes
B after: 200 MISS -
--- no_error_log
[alert]
--- timeout: 60
