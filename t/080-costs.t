# Costs: prices per model (and provider) in micro-units, the cost of each
# call from its usage in each provider's shape (x-helix-cost, the
# counters, the completion log), cache hits cost nothing and count what
# they saved, budgets per key and per tenant on one node, the spend API.
use Test::Nginx::Socket 'no_plan';
use Helix;
use HelixPg;

HelixPg::reset();

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<'_EOC_');
    location = /metrics { helix_endpoint metrics; }
    location = /v1/admin/spend { helix_endpoint spend; }
    location /v1/admin/keys/ { helix_endpoint admin_keys; }
    # a provider whose answers report a prompt cache (read and written)
    location /_helix/cachy/ {
        internal;
        default_type application/json;
        return 200 '{"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-haiku-20240307", "content": [{"type": "text", "text": "cached"}], "stop_reason": "end_turn", "stop_sequence": null, "usage": {"input_tokens": 100, "cache_creation_input_tokens": 2000, "cache_read_input_tokens": 30000, "output_tokens": 7}}';
    }
_EOC_

our $Keys = <<'_EOY_';
auth:
  enabled: false
  keys:
    - name: alice
      key: sk-alice-0123456789abcdef0123456789abcdef
      tenant: acme
      budget: {amount: 0.03, period: day}
    - name: bob
      key: sk-bob-0123456789abcdef0123456789abcdef01
      tenant: acme
    - name: carol
      key: sk-carol-0123456789abcdef0123456789abcdef
  tenants:
    - name: acme
      budget: {amount: 0.05, period: month}
_EOY_

our $Pricing = <<'_EOY_';
pricing:
  currency: EUR
  cost_header: true
  models:
    - model: gpt-4o
      input: 2.5
      output: 10
    - model: claude-3-haiku-20240307
      input: 0.25
      output: 1.25
      cached_input: 0.03
      cache_write: 0.3
    - model: claude-cachy
      input: 1
      output: 1
    - model: claude-cachy
      provider: cachy
      input: 3
      output: 15
      cached_input: 0.3
      cache_write: 3.75
    - model: gemini-1.5-flash
      input: 0.075
      output: 0.3
    - model: mock-shared
      input: 0
      output: 2000
_EOY_

sub yaml {
    my (%o) = @_;
    my $p = $Helix::Providers
        . "  cachy:\n    type: anthropic\n    api_key: x\n    models: [claude-cachy]\n";
    return ">>> helix.yaml\n$p$Pricing$Keys" . ($o{db} ? HelixPg::yaml() : '');
}

# one call with curl: (status, headers, body)
sub call {
    my ($body, @h) = @_;
    my $res = `curl -s -m 30 -D - -H 'Content-Type: application/json' @{[ map { "-H '$_'" } @h ]} --data-binary '$body' $Base/v1/chat/completions`;
    my ($head, $b) = split /\r\n\r\n/, $res, 2;
    my ($status) = $head =~ m{^HTTP/\S+ (\d+)};
    return ($status, $head, $b);
}

sub header { my ($head, $name) = @_; my ($v) = $head =~ /^\Q$name\E: ([^\r\n]*)/mi; return $v // '-'; }

sub chat { my ($model, $c, $max) = @_; my $m = defined $max ? qq(, "max_tokens": $max) : '';
    return qq({"model": "$model", "messages": [{"role": "user", "content": "$c $$"}]$m}); }

# micro-units, rounded up, as the gateway computes them
sub cost {
    my ($in, $out, $pt, $ct, $cached, $write, $cin, $cw) = @_;
    $cached //= 0; $write //= 0; $cin //= 0; $cw //= 0;
    my $sum = ($pt - $cached - $write) * $in + $cached * $cin + $write * $cw + $ct * $out;
    return int(($sum + 999999) / 1000000);
}

sub money { my ($m) = @_; return sprintf("%d.%06d", int($m / 1000000), $m % 1000000); }

sub metric {
    my ($name, $labels) = @_;
    my $m = `curl -s $Base/metrics`;
    my ($v) = $m =~ /^\Q$name\E\{\Q$labels\E\} (\S+)$/m;
    return $v // '-';
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: each provider's usage priced exactly: x-helix-cost is prompt x input + completion x output, rounded up to the micro-unit
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml()
--- request
GET /v1/health
--- response_body_filters eval
sub {
    my @out;
    for my $m (['gpt-4o', 2500000, 10000000], ['claude-3-haiku-20240307', 250000, 1250000],
               ['gemini-1.5-flash', 75000, 300000]) {
        my ($s, $h, $b) = main::call(main::chat($m->[0], "price"));
        my ($pt) = $b =~ /"prompt_tokens":\s*(\d+)/;
        my ($ct) = $b =~ /"completion_tokens":\s*(\d+)/;
        my $want = main::money(main::cost($m->[1], $m->[2], $pt, $ct));
        my $got = main::header($h, 'x-helix-cost');
        push @out, "$s $m->[0] " . ($got eq $want ? "exact" : "got $got, want $want");
    }
    join("\n", @out) . "\n";
}
--- response_body
200 gpt-4o exact
200 claude-3-haiku-20240307 exact
200 gemini-1.5-flash exact
--- no_error_log
[error]



=== TEST 2: Anthropic's cache reads and writes have their own prices, and a provider's own price wins
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml()
--- request
GET /v1/health
--- response_body_filters eval
sub {
    my ($s, $h, $b) = main::call(main::chat('claude-cachy', "cachy"),
                                 'Cache-Control: no-store');
    my $p = main::header($h, 'x-helix-provider');
    return "$s $p " . main::header($h, 'x-helix-cost') if $p ne 'cachy';
    # 100 x 3 + 30000 x 0.3 + 2000 x 3.75 + 7 x 15 = 16905 per million
    "$s $p " . main::header($h, 'x-helix-cost') . " want "
        . main::money(main::cost(3000000, 15000000, 32100, 7, 30000, 2000, 300000, 3750000));
}
--- response_body_like: ^200 cachy 0\.016905 want 0\.016905$



=== TEST 3: a cache hit costs nothing and counts what it saved; the counters have the key's name
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml()
--- request
GET /v1/health
--- response_body_filters eval
sub {
    my @k = ('Authorization: Bearer sk-carol-0123456789abcdef0123456789abcdef');
    my ($s1, $h1, $b1) = main::call(main::chat('gpt-4o', "hit"), @k);
    my ($s2, $h2, $b2) = main::call(main::chat('gpt-4o', "hit"), @k);
    my $l = 'provider="openai",model="gpt-4o",key="carol"';
    join "\n", "$s1 " . main::header($h1, 'x-cache') . " " . main::header($h1, 'x-helix-cost'),
        "$s2 " . main::header($h2, 'x-cache') . " " . main::header($h2, 'x-helix-cost'),
        "total " . (main::metric('helixagent_cost_total', $l) eq main::header($h1, 'x-helix-cost') ? "= miss" : "differs"),
        "saved " . (main::metric('helixagent_cost_saved_total', $l) eq main::header($h1, 'x-helix-cost') ? "= miss" : "differs");
}
--- response_body_like
^200 MISS 0\.\d+
200 HIT 0\.000000
total = miss
saved = miss$



=== TEST 4: a key's budget on one node: reserved from max_tokens, spent to the cent, then 429 budget_exceeded until it resets
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml()
--- request
GET /v1/health
--- response_body_filters eval
sub {
    my @k = ('Authorization: Bearer sk-alice-0123456789abcdef0123456789abcdef', 'Cache-Control: no-cache');
    my @out;
    # mock-shared: 0.002 per output token; 5 tokens = 0.01, the reservation too
    for my $i (1 .. 4) {
        my ($s, $h, $b) = main::call(main::chat('mock-shared', "budget $i", 5), @k);
        my ($code) = $b =~ /"code":"([^"]+)"/;
        push @out, "$s " . main::header($h, 'x-helix-budget-remaining') . " " . ($code // main::header($h, 'x-helix-cost'))
            . ($s == 429 ? " retry " . (main::header($h, 'retry-after') > 0 ? "ok" : "-")
                           . " reset " . main::header($h, 'x-helix-budget-reset') =~ s/\d{4}-\d\d-\d\dT00:00:00Z/<midnight>/r : '');
    }
    join("\n", @out) . "\n";
}
--- response_body
200 0.020000 0.010000
200 0.010000 0.010000
200 0.000000 0.010000
429 0.000000 budget_exceeded retry ok reset <midnight>



=== TEST 5: the reservation is max_tokens at the dearest price; the usage settles it (a big max_tokens is refused, a small answer charged only what it used)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml()
--- request
GET /v1/health
--- response_body_filters eval
sub {
    my @k = ('Authorization: Bearer sk-alice-0123456789abcdef0123456789abcdef', 'Cache-Control: no-cache');
    my @out;
    my ($s, $h, $b) = main::call(main::chat('mock-shared', "big", 100), @k);
    push @out, "$s " . ($b =~ /"code":"budget_exceeded"/ ? "budget_exceeded" : $b);
    # 8 tokens reserved (0.016), the answer has 3 words: LONG:3 -> 0.006
    ($s, $h, $b) = main::call(main::chat('mock-shared', "LONG:3", 8), @k);
    my ($ct) = $b =~ /"completion_tokens":\s*(\d+)/;
    push @out, "$s used $ct cost " . main::header($h, 'x-helix-cost') . " left " . main::header($h, 'x-helix-budget-remaining');
    my $ks = `curl -s -H 'Authorization: Bearer wrong' $Base/v1/admin/keys/alice`;
    push @out, "admin without token: " . ($ks =~ /"code":"(\w+)"/)[0];
    join("\n", @out) . "\n";
}
--- response_body
429 budget_exceeded
200 used 3 cost 0.006000 left 0.024000
admin without token: invalid_admin_token



=== TEST 6: a tenant's budget is shared by its keys; a key without one of its own spends the tenant's
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml() =~ s/amount: 0.03/amount: 1/r
--- request
GET /v1/health
--- response_body_filters eval
sub {
    my @a = ('Authorization: Bearer sk-alice-0123456789abcdef0123456789abcdef', 'Cache-Control: no-cache');
    my @b = ('Authorization: Bearer sk-bob-0123456789abcdef0123456789abcdef01', 'Cache-Control: no-cache');
    my @out;
    for my $i (1 .. 3) {
        my ($s, $h) = main::call(main::chat('mock-shared', "tenant a$i", 5), @a);
        push @out, "alice $s " . main::header($h, 'x-helix-budget-remaining');
        ($s, $h) = main::call(main::chat('mock-shared', "tenant b$i", 5), @b);
        push @out, "bob $s " . main::header($h, 'x-helix-budget-remaining');
    }
    join("\n", @out) . "\n";
}
--- response_body
alice 200 0.040000
bob 200 0.030000
alice 200 0.020000
bob 200 0.010000
alice 200 0.000000
bob 429 0.000000



=== TEST 7: a stream's cost comes from its usage (counted; no header: it went before the usage)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml()
--- request
GET /v1/health
--- response_body_filters eval
sub {
    my $l = 'provider="gemini",model="gemini-1.5-flash",key="carol"';
    my $before = main::metric('helixagent_cost_total', $l);
    $before = 0 if $before eq '-';
    my $res = `curl -s -N -D - -H 'Authorization: Bearer sk-carol-0123456789abcdef0123456789abcdef' -H 'Content-Type: application/json' --data-binary '{"model": "gemini-1.5-flash", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "stream $$"}]}' $Base/v1/chat/completions`;
    my ($pt) = $res =~ /"prompt_tokens":\s*(\d+)/;
    my ($ct) = $res =~ /"completion_tokens":\s*(\d+)/;
    my $after = main::metric('helixagent_cost_total', $l);
    my $want = main::cost(75000, 300000, $pt, $ct) / 1e6;
    "header " . ($res =~ /^x-helix-cost:/mi ? "yes" : "no") . "\n"
        . "counted " . (abs($after - $before - $want) < 1e-9 ? "exactly" : "$before -> $after, want +$want") . "\n";
}
--- response_body
header no
counted exactly



=== TEST 8: prices and budgets are checked at load: file, line, key
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
pricing:
  models:
    - model: gpt-4o
      input: 0.1234567
--- must_die
--- error_log
helix.yaml:4: pricing.models[0].input: expected an amount like "0.15" (at most 6 decimals, below 10^9), got "0.1234567"



=== TEST 9: a budget needs its period
--- config
--- http_config eval: $::HttpConfig
--- user_files
>>> helix.yaml
auth:
  keys:
    - name: a
      key: sk-a-0123456789abcdef0123456789abcdef
      budget: {amount: 5}
--- must_die
--- error_log
helix.yaml:5: auth.keys[0].budget: a budget needs an "amount" and a "period" (day or month)
