package Helix;

# Shared nginx configuration for the gateway tests: one upstream and one
# internal provider location per mock provider (as a user writes them),
# the API endpoints, and /mock/<provider>/... to reach the mock's
# control API (/_mock/stats, /_mock/faults, /_mock/reset) from a test.

use strict;
use warnings;

sub http_config {
    my (%o) = @_;
    my $keepalive = $o{keepalive} // 32;
    my $extra = $o{extra} // '';
    # where tasks and warming call the gateway: this nginx's own listen
    my $loopback = $o{loopback} // $ENV{TEST_NGINX_SERVER_PORT};
    return <<"_EOC_";
    helix_config ../html/helix.yaml;
    helix_loopback 127.0.0.1:$loopback;

    upstream helix_openai {
        server 127.0.0.1:$ENV{TEST_NGINX_OPENAI_PORT};
        keepalive $keepalive;
    }
    upstream helix_claude {
        server 127.0.0.1:$ENV{TEST_NGINX_ANTHROPIC_PORT};
        keepalive $keepalive;
    }
    upstream helix_gemini {
        server 127.0.0.1:$ENV{TEST_NGINX_GEMINI_PORT};
        keepalive $keepalive;
    }
    upstream helix_dead {
        # nothing listens here: connection refused
        server 127.0.0.1:1;
    }
$extra
_EOC_
}

sub config {
    my (%o) = @_;
    my $extra = $o{extra} // '';
    # tests of the provider path itself keep the cache out of the way
    my $s = ($o{cache} // 1) ? '' : "    helix_cache_policy off;\n";
    for my $p (qw(openai claude gemini dead)) {
        $s .= <<"_EOC_";
    location /_helix/$p/ {
        internal;
        proxy_pass http://helix_$p/;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_read_timeout 30s;
    }
_EOC_
    }
    for my $p ([openai => 'OPENAI'], [claude => 'ANTHROPIC'],
               [gemini => 'GEMINI'])
    {
        $s .= <<"_EOC_";
    location /mock/$p->[0]/ {
        proxy_pass http://127.0.0.1:$ENV{"TEST_NGINX_$p->[1]_PORT"}/_mock/;
    }
    location = /mock/$p->[0]/reset {
        proxy_method POST;
        proxy_pass http://127.0.0.1:$ENV{"TEST_NGINX_$p->[1]_PORT"}/_mock/reset;
    }
_EOC_
    }
    # every mock back to no faults and zero counts, in one request
    $s .= <<'_EOC_';
    location = /mock/reset {
        ssi on;
        ssi_types *;
        default_type text/plain;
        return 200 '<!--# include virtual="/mock/openai/reset" --><!--# include virtual="/mock/claude/reset" --><!--# include virtual="/mock/gemini/reset" -->';
    }
_EOC_
    return $s . <<"_EOC_";
    location = /v1/chat/completions { helix_endpoint chat_completions; }
    location = /v1/completions { helix_endpoint completions; }
    location = /v1/embeddings { helix_endpoint embeddings; }
    location = /v1/models { helix_endpoint models; }
    location = /v1/health { helix_endpoint provider_health; }
$extra
_EOC_
}

# the three mock providers, as helix.yaml lists them
our $Providers = <<'_EOC_';
providers:
  openai:
    type: openai
    api_key: sk-openai-test
    models: [gpt-4o, mock-shared]
    embedding_models: [text-embedding-3-small, mock-embed]
  claude:
    type: anthropic
    api_key: sk-ant-test
    models: [claude-3-haiku-20240307, mock-shared]
  gemini:
    type: gemini
    api_key: gem-test
    models: [gemini-1.5-flash, mock-shared]
    embedding_models: [text-embedding-004, mock-embed]
_EOC_

# a completion task for gpt-4o, as POST /v1/tasks takes it
sub task_json {
    my ($prompt) = @_;
    return qq({"type": "completion", "payload": {"prompt": "$prompt", "model": "gpt-4o"}});
}

# a chat completion sent with these headers: "<status> limit <n> left <n>"
# from its x-ratelimit-*-requests headers ("-" where there is none)
sub chat_limits {
    my (@headers) = @_;
    my $base = "http://127.0.0.1:$ENV{TEST_NGINX_SERVER_PORT}";
    my $out = `curl -s -m 30 -D - -o /dev/null -H 'Content-Type: application/json' @{[ map { "-H '$_'" } @headers ]} --data-binary '{"model": "gpt-4o", "messages": [{"role": "user", "content": "chat $$"}]}' $base/v1/chat/completions`;
    my ($code) = $out =~ m{^HTTP/\S+ (\d+)};
    my ($limit) = $out =~ /^x-ratelimit-limit-requests: (\d+)/mi;
    my ($left) = $out =~ /^x-ratelimit-remaining-requests: (\d+)/mi;
    return "$code limit " . ($limit // '-') . " left " . ($left // '-');
}

# --- response_body_filters eval with one entry per request: Test::Nginx
# applies every element of a flat list to every response; per request it
# takes a list of lists.  per_request([undef, sub {...}]) makes
# [[], [sub {...}]]: no filter for the first response, the sub for the second
sub per_request {
    my ($list) = @_;
    return [map { !defined $_ ? [] : ref $_ eq 'ARRAY' ? $_ : [$_] } @$list];
}

# how many lines of this test's error.log match
sub log_count {
    my ($re) = @_;
    open my $fh, '<', "$ENV{TEST_NGINX_SERVER_ROOT}/logs/error.log" or return 0;
    my $n = 0;
    while (my $l = <$fh>) { $n++ if $l =~ $re; }
    return $n;
}

# stops the nginx a test started itself with prefix $dir (a second node):
# QUIT, and KILL for it and its workers if it is still there after 10 s
# (unless kill => 0: then it only waits those 10 s, as tests did before).
# Tests call it from a cleanup handler too, so that a test file that dies
# half-way leaves no nginx behind to serve (or claim tasks in) later runs.
sub stop_nginx_in {
    my ($dir, %o) = @_;
    my $kill = $o{kill} // 1;
    open my $fh, '<', "$dir/logs/nginx.pid" or return;
    my $pid = <$fh> // '';
    close $fh;
    chomp $pid;
    return unless $pid =~ /^\d+$/;
    kill 'QUIT', $pid;
    for (1 .. 200) {
        return unless kill(0, $pid) && -e "$dir/logs/nginx.pid";
        select(undef, undef, undef, 0.05);
    }
    return unless $kill;
    system("pkill -KILL -P $pid");
    kill 'KILL', $pid;
}

1;
