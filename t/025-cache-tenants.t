# Cache entries belong to a tenant: a key's "tenant" (default: its own
# name); clients without a key share one.  A policy with "shared: true"
# keeps one entry for all.  X-Cache-Key only with helix_cache_key_header.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<'_EOC_');
    location = /v1/admin/cache/clear { helix_endpoint cache_clear; }
    location = /debug/v1/chat/completions {
        helix_endpoint chat_completions;
        helix_cache_key_header on;
    }
_EOC_

our $A = "Authorization: Bearer sk-tenant-a-0123456789abcdef0123456789abcdef";
our $A2 = "Authorization: Bearer sk-tenant-a2-0123456789abcdef0123456789abcde";
our $B = "x-api-key: sk-tenant-b-0123456789abcdef0123456789abcdef";

sub yaml {
    my (%o) = @_;
    my $auth = $o{auth} // 'true';
    my $a2 = $o{a2_tenant} ? "      tenant: $o{a2_tenant}\n" : "";
    my $policies = $o{shared}
        ? "cache:\n  policies:\n    completions:\n      shared: true\n" : "";
    return ">>> helix.yaml\n$Helix::Providers$policies" . <<"_EOC_";
admin:
  token: adm1n-0123456789abcdef0123456789abcdef
auth:
  enabled: $auth
  keys:
    - name: team-a
      key: sk-tenant-a-0123456789abcdef0123456789abcdef
      tenant: acme
    - name: team-a2
      key: sk-tenant-a2-0123456789abcdef0123456789abcde
$a2    - name: team-b
      key: sk-tenant-b-0123456789abcdef0123456789abcdef
_EOC_
}

sub chat {
    my ($content, $path) = @_;
    $path //= "/v1/chat/completions";
    return "POST $path\n"
        . qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "$content"}]});
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the same bytes from two tenants are two entries, two provider calls; each tenant hits its own; no X-Cache-Key
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers eval
["", $::A, $::B, $::A, $::B, ""]
--- request eval
["POST /mock/reset", main::chat("t1"), main::chat("t1"), main::chat("t1"), main::chat("t1"), "GET /mock/openai/stats"]
--- response_headers eval
["", "X-Cache: MISS\nX-Cache-Key:", "X-Cache: MISS\nX-Cache-Key:", "X-Cache: HIT\nX-Cache-Key:", "X-Cache: HIT\nX-Cache-Key:", ""]
--- response_body_like eval
["", "chat.completion", "chat.completion", "chat.completion", "chat.completion", '"total":2,']
--- no_error_log
[error]



=== TEST 2: two keys of one tenant share its entries
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(a2_tenant => "acme")
--- more_headers eval
["", $::A, $::A2, $::B, "", ""]
--- request eval
["POST /mock/reset", main::chat("t2"), main::chat("t2"), main::chat("t2"), "GET /mock/openai/stats"]
--- response_headers eval
["", "X-Cache: MISS", "X-Cache: HIT", "X-Cache: MISS", ""]
--- response_body_like eval
["", "chat.completion", "chat.completion", "chat.completion", '"total":2,']



=== TEST 3: a key without "tenant" is its own tenant, apart from another key's
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers eval
["", $::A, $::A2, $::A2, ""]
--- request eval
["POST /mock/reset", main::chat("t3"), main::chat("t3"), main::chat("t3"), "GET /mock/openai/stats"]
--- response_headers eval
["", "X-Cache: MISS", "X-Cache: MISS", "X-Cache: HIT", ""]
--- response_body_like eval
["", "chat.completion", "chat.completion", "chat.completion", '"total":2,']



=== TEST 4: a policy with "shared: true" keeps one entry for every tenant
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(shared => 1)
--- more_headers eval
["", $::A, $::B, $::A2, ""]
--- request eval
["POST /mock/reset", main::chat("t4"), main::chat("t4"), main::chat("t4"), "GET /mock/openai/stats"]
--- response_headers eval
["", "X-Cache: MISS", "X-Cache: HIT", "X-Cache: HIT", ""]
--- response_body_like eval
["", "chat.completion", "chat.completion", "chat.completion", '"total":1,']



=== TEST 5: auth off: clients without a key (or with an unknown one) share one tenant; a known key is its own
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml(auth => "false")
--- more_headers eval
["", "", "Authorization: Bearer nobody-knows-this", $::B, $::B, ""]
--- request eval
["POST /mock/reset", main::chat("t5"), main::chat("t5"), main::chat("t5"), main::chat("t5"), "GET /mock/openai/stats"]
--- response_headers eval
["", "X-Cache: MISS", "X-Cache: HIT", "X-Cache: MISS", "X-Cache: HIT", ""]
--- response_body_like eval
["", "chat.completion", "chat.completion", "chat.completion", "chat.completion", '"total":2,']



=== TEST 6: X-Helix-Tenant from a client is no way into another tenant's entries
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers eval
["", $::A, "$::B\nX-Helix-Tenant: acme", "$::B\nX-Helix-Tenant: acme\nX-Helix-Internal: v1.9999999999.00", ""]
--- request eval
["POST /mock/reset", main::chat("t6"), main::chat("t6"), main::chat("t6"), "GET /mock/openai/stats"]
--- response_headers eval
["", "X-Cache: MISS", "X-Cache: MISS", "X-Cache: HIT", ""]
--- response_body_like eval
["", "chat.completion", "chat.completion", "chat.completion", '"total":2,']



=== TEST 7: helix_cache_key_header on: X-Cache-Key on a miss and on a hit, with the same key
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers eval
[$::A, $::A, $::A]
--- request eval
[main::chat("t7", "/debug/v1/chat/completions"), main::chat("t7", "/debug/v1/chat/completions"), main::chat("t7")]
--- response_headers eval
["X-Cache: MISS", "X-Cache: HIT", "X-Cache: HIT\nX-Cache-Key:"]
--- response_headers_like eval
["X-Cache-Key: completion:openai:gpt-4o:[0-9a-f]{32}", "X-Cache-Key: completion:openai:gpt-4o:[0-9a-f]{32}", ""]



=== TEST 8: streams are scoped too: another tenant's stream is a miss, the tenant's own a replay
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers eval
["", $::A, $::B, $::A, ""]
--- request eval
["POST /mock/reset",
 map({ 'POST /v1/chat/completions
{"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "t8"}]}' } 1..3),
 "GET /mock/openai/stats"]
--- response_headers eval
["", "X-Cache: MISS", "X-Cache: MISS", "X-Cache: HIT", ""]
--- response_body_like eval
["", "data: \\[DONE\\]", "data: \\[DONE\\]", "data: \\[DONE\\]", '"total":2,']



=== TEST 9: the admin clear's patterns still match every tenant's entries
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers eval
[$::A, $::B, "Authorization: Bearer adm1n-0123456789abcdef0123456789abcdef", $::A, $::B]
--- request eval
[main::chat("t9"), main::chat("t9"), "POST /v1/admin/cache/clear\n" . '{"pattern": "completion:openai:*"}', main::chat("t9"), main::chat("t9")]
--- response_headers eval
["X-Cache: MISS", "X-Cache: MISS", "", "X-Cache: MISS", "X-Cache: MISS"]
--- response_body_like eval
["", "", '^\{"removed":2,"tiers":\{"l1":2\},"pattern":"completion:openai:\*"\}$', "", ""]



=== TEST 10: a key's tenant must be a plain name
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
my $y = main::yaml(); $y =~ s/tenant: acme/tenant: "ac me"/; $y
--- must_die
--- error_log eval
qr/helix\.yaml:\d+: auth\.keys\[0\]: invalid "tenant" "ac me"/
