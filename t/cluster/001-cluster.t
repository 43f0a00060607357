# Three gateway nodes, each nginx in its own network namespace (hx-n1..3,
# 10.213.0.11-13), behind an nginx load balancer with least_conn (this
# test's namespace, hx-lb, 10.213.0.10:8000), on one Redis and one
# PostgreSQL in namespaces of their own (util/cluster.sh sets them up;
# "make test-cluster").  Exact counts: limits across the nodes, L2
# shared, an admin clear reaching every node's L1, a node cut off from
# Redis answering and rejoining, tasks exactly once with a node killed
# and with a node cut off from PostgreSQL.  Waits poll for a signal;
# figures go to the diagnostics.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time);

# only inside the test bed (util/cluster.sh sets it), never in "make test"
BEGIN {
    plan skip_all => 'run by "make test-cluster" (util/cluster.sh)'
        unless $ENV{HELIX_CLUSTER_PREFIX};
}
use Cwd qw(abs_path);

BEGIN {
    $ENV{TEST_NGINX_OPENAI_PORT} = 18101;
    $ENV{TEST_NGINX_ANTHROPIC_PORT} = 18102;
    $ENV{TEST_NGINX_GEMINI_PORT} = 18103;
}
use Helix;

my $P = $ENV{HELIX_CLUSTER_PREFIX} // 'hx-';
my $Top = abs_path('.');
my $Module = "$Top/build/ngx_http_helix_module.so";
my $State = "$Top/build/cluster";
my $Net = '10.213.0';
my %Addr = (n1 => "$Net.11", n2 => "$Net.12", n3 => "$Net.13");
my $Lb = "http://$Net.10:8000";
my $Admin = 'adm1n-0123456789abcdef0123456789abcdef';
my $Limited = 'sk-cluster-limited-0123456789abcdef01234567';
my $Free = 'sk-cluster-free-0123456789abcdef0123456789ab';
my $Run = $$;

sub wait_for {
    my ($ok, $n) = @_;
    for (1 .. ($n // 1200)) {
        return 1 if $ok->();
        select(undef, undef, undef, 0.05);
    }
    return 0;
}

sub psql {
    my ($sql) = @_;
    $sql =~ s/'/'\\''/g;
    my $out = `PGCONNECT_TIMEOUT=5 psql -X -q -tA -h $Net.3 -U postgres -d helixagent -c '$sql' 2>&1`;
    chomp $out;
    return $out;
}

sub redis { my $a = join ' ', map { "'$_'" } @_;
    my $o = `redis-cli -h $Net.2 $a 2>&1`; chomp $o; return $o; }

sub in_ns { my ($ns, $cmd) = @_; return system("ip netns exec $P$ns $cmd"); }

my $Yaml = "$Helix::Providers"
    . "admin:\n  token: $Admin\n"
    . "cache:\n  l2:\n    enabled: true\n"
    . "redis:\n  host: $Net.2\n  port: 6379\n  pool:\n    size: 4\n    timeout: 500ms\n"
    . "  breaker:\n    failures: 2\n    backoff: 200ms\n    max_backoff: 1s\n"
    . "database:\n  host: $Net.3\n  port: 5432\n  name: helixagent\n  user: postgres\n"
    . "  breaker:\n    failures: 1\n    backoff: 200ms\n    max_backoff: 1s\n"
    . "auth:\n  enabled: true\n  keys:\n"
    . "    - name: limited-$Run\n      key: $Limited\n      requests_per_minute: 9\n"
    . "    - name: free-$Run\n      key: $Free\n      requests_per_minute: 1000000\n"
    . "rate_limit:\n  window: 1h\n"
    . "tasks:\n  poll_interval: 200ms\n  lease: 3s\n  callback_backoff: 100ms\n"
    . "  callback_allow: [$Net.0/24]\n";

sub start_node {
    my ($n) = @_;
    my $d = "$State/$n";
    system("mkdir -p $d/conf $d/logs $d/html");
    open my $y, '>', "$d/html/helix.yaml" or die;
    print $y $Yaml;
    close $y;
    my $http = Helix::http_config(loopback => 8080);
    $http =~ s{\.\./html/helix\.yaml}{$d/html/helix.yaml};
    $http =~ s{server 127\.0\.0\.1:(181\d\d)}{server $Net.4:$1}g;
    my $cfg = Helix::config(extra => "    location /v1/tasks { helix_endpoint tasks; }\n"
        . "    location = /metrics { helix_endpoint metrics; }\n"
        . "    location = /v1/admin/cache/clear { helix_endpoint cache_clear; }\n");
    $cfg =~ s{127\.0\.0\.1:(181\d\d)}{$Net.4:$1}g;
    open my $fh, '>', "$d/conf/nginx.conf" or die;
    print $fh "load_module $Module;\npid logs/nginx.pid;\nerror_log logs/error.log info;\n"
        . "worker_processes 2;\nevents {}\nhttp {\naccess_log off;\n"
        . "client_body_temp_path $d/body;\nproxy_temp_path $d/proxy;\n$http\n"
        . "server {\nlisten 8080;\nadd_header X-Node $n always;\n$cfg}\n}\n";
    close $fh;
    unlink "$d/logs/error.log";
    in_ns($n, "/usr/sbin/nginx -p $d/ -c conf/nginx.conf") == 0 or die "$n did not start";
    wait_for(sub { `curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer $Free' http://$Addr{$n}:8080/v1/models` eq '200' })
        or die "$n does not answer";
}

sub start_lb {
    my $d = "$State/lb";
    system("mkdir -p $d/conf $d/logs");
    open my $fh, '>', "$d/conf/nginx.conf" or die;
    print $fh "pid logs/nginx.pid;\nerror_log logs/error.log;\nevents {}\nhttp {\n"
        . "client_body_temp_path $d/body;\nproxy_temp_path $d/proxy;\n"
        . "log_format cb '\$request_body';\n"
        . "upstream nodes {\n    least_conn;\n"
        . join('', map { "    server $Addr{$_}:8080 max_fails=1 fail_timeout=2s;\n" } sort keys %Addr)
        . "}\nserver {\n    listen $Net.10:8000;\n"
        . "    location / { proxy_pass http://nodes; proxy_next_upstream error timeout; }\n"
        . "    location = /callback {\n        access_log logs/callback.log cb;\n"
        . "        client_body_buffer_size 64k;\n        proxy_method GET;\n"
        . "        proxy_pass_request_body off;\n        proxy_set_header Content-Length \"\";\n"
        . "        proxy_pass http://$Net.4:18101/v1/models;\n    }\n}\n}\n";
    close $fh;
    system("/usr/sbin/nginx -p $d/ -c conf/nginx.conf") == 0 or die "the load balancer did not start";
}

sub stop_nginx {
    my ($d) = @_;
    Helix::stop_nginx_in($d);
}

# the node's log has a line matching $re
sub node_log {
    my ($n, $re) = @_;
    open my $fh, '<', "$State/$n/logs/error.log" or return 0;
    my $c = 0;
    while (my $l = <$fh>) { $c++ if $l =~ $re; }
    return $c;
}

# a chat completion: (status, node, X-Cache, tier)
sub chat {
    my ($url, $key, $c) = @_;
    my $out = `curl -s -m 30 -D - -o /dev/null -H 'Authorization: Bearer $key' --data-binary '{"model": "gpt-4o", "messages": [{"role": "user", "content": "$c $Run"}]}' $url/v1/chat/completions`;
    my ($code) = $out =~ m{^HTTP/\S+ (\d+)};
    my ($node) = $out =~ /^X-Node: (\S+)/mi;
    my ($xc) = $out =~ /^X-Cache: (\w+)/mi;
    my ($tier) = $out =~ /^X-Cache-Tier: (\w+)/mi;
    return ($code // 0, $node // '-', $xc // '-', $tier // '-');
}

sub node_url { return "http://$Addr{$_[0]}:8080"; }

sub metric {
    my ($n, $name) = @_;
    my $t = `curl -s -m 10 @{[ node_url($n) ]}/metrics`;
    my $re = quotemeta $name;
    return $t =~ /^$re (\S+)$/m ? $1 : 'none';
}

sub post_task {
    my ($prompt) = @_;
    my $out = `curl -s -m 30 -w '\\n%{http_code}' -H 'Authorization: Bearer $Free' --data-binary '{"type": "completion", "payload": {"prompt": "$prompt", "model": "gpt-4o", "callback_url": "$Lb/callback"}}' $Lb/v1/tasks`;
    my ($body, $code) = $out =~ /^(.*)\n(\d+)$/s;
    my ($id) = ($body // '') =~ /"task_id":"([^"]+)"/;
    return ($code // 0, $id);
}

# every accepted task completed, its callback delivered: exact counts
sub tasks_done {
    my ($name, $t0, @ids) = @_;
    my $list = join ',', map { "'$_'" } @ids;
    my $done = 0;
    wait_for(sub {
        $done = psql("SELECT count(*) FROM background_tasks WHERE id IN ($list) AND status = 'completed' AND callback_status = 'delivered'");
        $done == @ids }, 1800);
    my $secs = time - $t0;
    is($done, scalar @ids, "$name: every accepted task completed and its callback delivered");
    my %cb;
    if (open my $fh, '<', "$State/lb/logs/callback.log") {
        while (my $l = <$fh>) { $cb{$1}++ while $l =~ /task_id\\x22:\\x22(task-[0-9a-f-]+)/g; }
    }
    my $got = grep { $cb{$_} } @ids;
    my $dup = grep { ($cb{$_} // 0) > 1 } @ids;
    is($got, scalar @ids, "$name: every accepted task's callback received");
    my $runs = psql("SELECT sum(attempts) FROM background_tasks WHERE id IN ($list)");
    cmp_ok($runs, '>', scalar @ids, "$name: the tasks caught by the fault ran again elsewhere");
    diag(sprintf("%s: %d tasks (each 2 s at the provider), all completed and called back %.1f s "
        . "after the fault; runs (attempts) %s; callbacks received more than once: %d",
        $name, scalar @ids, $secs, $runs, $dup));
    return $dup;
}

my $Started;

END {
    if ($Started) {
        stop_nginx("$State/lb");
        stop_nginx("$State/$_") for sort keys %Addr;
    }
}

$Started = 1;
system("mkdir -p $State");
unlink "$State/lb/logs/callback.log";
psql("DELETE FROM background_tasks");
redis('FLUSHALL');
start_node($_) for sort keys %Addr;
start_lb();
wait_for(sub { `curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer $Free' $Lb/v1/models` eq '200' })
    or die "the load balancer does not answer";

# --- limits: N per minute across the nodes, not N per node
{
    my (%codes, %nodes);
    for my $i (1 .. 15) {
        my ($code, $node) = chat($Lb, $Limited, "limit $i");
        $codes{$code}++;
        $nodes{$node}++;
    }
    is($codes{200} // 0, 9, 'limits: 9 of 15 answered with a limit of 9 per minute');
    is($codes{429} // 0, 6, 'limits: the other 6 are 429');
    cmp_ok(scalar keys %nodes, '>=', 2, 'limits: the answers came from more than one node');
    diag("limits: answers per node: " . join(', ', map { "$_ $nodes{$_}" } sort keys %nodes));
}

# --- L2 shared: cached through node 1, an L2 hit on node 2
{
    my @a = chat(node_url('n1'), $Free, 'shared');
    is("$a[0] $a[2]", '200 MISS', 'L2: node 1 asks the provider');
    wait_for(sub { redis('--scan', '--pattern', 'completion:*') =~ /\S/ });
    my @b = chat(node_url('n2'), $Free, 'shared');
    is("$b[0] $b[2] $b[3]", '200 HIT L2', 'L2: node 2 finds it in L2');
}

# --- admin clear on node 1: L2 for all, L1 on every node
{
    my @c = chat(node_url('n3'), $Free, 'shared');
    is("$c[2] $c[3]", 'HIT L2', 'clear: node 3 has it from L2 (now in its L1)');
    my @d = chat(node_url('n2'), $Free, 'shared');
    is("$d[2] $d[3]", 'HIT L1', 'clear: node 2 now has it in L1');
    my $t0 = time;
    my $ans = `curl -s -m 30 -X POST -H 'Authorization: Bearer $Admin' @{[ node_url('n1') ]}/v1/admin/cache/clear`;
    like($ans, qr/"l2":[1-9]/, 'clear: node 1 removed the L2 keys');
    my $heard = wait_for(sub {
        node_log('n2', qr/cache clear from redis \(all\): [1-9]\d* L1 entries removed/)
            && node_log('n3', qr/cache clear from redis \(all\): [1-9]\d* L1 entries removed/) });
    ok($heard, 'clear: nodes 2 and 3 dropped their L1 entries');
    diag(sprintf("clear: nodes 2 and 3 had dropped theirs within %.0f ms of the clear being sent",
        1000 * (time - $t0)));
    my @e = chat(node_url('n2'), $Free, 'shared');
    my @f = chat(node_url('n3'), $Free, 'shared 2');
    is($e[2], 'MISS', 'clear: node 2 asks the provider again');
}

# --- a node cut off from Redis keeps answering, and rejoins by itself
{
    my $opened = metric('n1', 'helixagent_redis_breaker_opened_total');
    in_ns('n1', "ip route add blackhole $Net.2/32");
    my %codes;
    for my $i (1 .. 8) {
        my ($code) = chat(node_url('n1'), $Free, "cut $i");
        $codes{$code}++;
    }
    is($codes{200} // 0, 8, 'redis cut: node 1 answered all 8');
    ok(wait_for(sub { metric('n1', 'helixagent_redis_breaker_opened_total') > $opened }),
        'redis cut: counted as degraded (breaker opened)');
    my $t0 = time;
    in_ns('n1', "ip route del blackhole $Net.2/32");
    ok(wait_for(sub { metric('n1', 'helixagent_redis_breaker_state{state="closed"}') eq '2' }),
        'redis back: both workers of node 1 closed their breakers');
    diag(sprintf("redis back: node 1's breakers closed %.0f ms after the route came back", 1000 * (time - $t0)));
    chat(node_url('n2'), $Free, 'rejoin');
    wait_for(sub { redis('--scan', '--pattern', 'completion:*') =~ /\S/ });
    my @r = chat(node_url('n1'), $Free, 'rejoin');
    is("$r[0] $r[2] $r[3]", '200 HIT L2', 'redis back: node 1 reads L2 again');
}

# --- tasks exactly once, with node 2 killed (kill -9, master and workers)
{
    my (@ids, $t_fault);
    for my $i (1 .. 24) {
        my ($code, $id) = post_task("kill $i $Run MOCK_LATENCY_MS:2000");
        push @ids, $id if $code == 202;
    }
    # node 2 has claimed a task (2 s at the provider): it goes now
    ok(wait_for(sub { node_log('n2', qr/task task-\S+ \(completion\) claimed/) }),
        'node killed: node 2 runs a task');
    kill 'KILL', split ' ', `ip netns pids ${P}n2`;
    $t_fault = time;
    for my $i (25 .. 32) {
        my ($code, $id) = post_task("kill $i $Run MOCK_LATENCY_MS:2000");
        push @ids, $id if $code == 202;
    }
    is(scalar @ids, 32, 'node killed: every task accepted (the load balancer steers around the dead node)');
    tasks_done('node killed', $t_fault, @ids);
    unlink "$State/n2/logs/nginx.pid";
    start_node('n2');
}

# --- tasks exactly once, with node 3 cut off from PostgreSQL mid-task
{
    my (@ids, $t_fault);
    for my $i (1 .. 24) {
        my ($code, $id) = post_task("pgcut $i $Run MOCK_LATENCY_MS:2000");
        push @ids, $id if $code == 202;
    }
    is(scalar @ids, 24, 'PostgreSQL cut: every task accepted before the cut');
    ok(wait_for(sub { node_log('n3', qr/task task-\S+ \(completion\) claimed/) }),
        'PostgreSQL cut: node 3 runs a task');
    in_ns('n3', "ip route add blackhole $Net.3/32");
    $t_fault = time;
    wait_for(sub { psql("SELECT count(*) FROM background_tasks WHERE status IN ('pending', 'running')") eq '0' }, 1800);
    in_ns('n3', "ip route del blackhole $Net.3/32");
    tasks_done('PostgreSQL cut', $t_fault, @ids);
}

done_testing();
