# L1: the answers cache in shared memory.
use Test::Nginx::Socket 'no_plan';
use Helix;

# X-Cache-Key is a debugging header: on here, to see the keys
our $HttpConfig = Helix::http_config() . "    helix_cache_key_header on;\n";
our $Config = Helix::config(extra => <<'_EOC_');
    location = /v1/admin/cache/clear { helix_endpoint cache_clear; }
    location = /v1/admin/cache/cleanup { helix_endpoint cache_cleanup; }
    location = /nocache/v1/chat/completions {
        helix_endpoint chat_completions;
        helix_cache_policy off;
    }
    location = /many {
        ssi on;
        ssi_types *;
        default_type text/plain;
        return 200 '<!--# include virtual="/one?1" -->|<!--# include virtual="/one?2" -->|<!--# include virtual="/one?3" -->|<!--# include virtual="/one?4" -->|<!--# include virtual="/one?5" -->|<!--# include virtual="/one?6" -->|<!--# include virtual="/one?7" -->|<!--# include virtual="/one?8" -->|<!--# include virtual="/one?9" -->|<!--# include virtual="/one?10" -->|<!--# include virtual="/one?11" -->|<!--# include virtual="/one?12" -->|<!--# include virtual="/one?13" -->|<!--# include virtual="/one?14" -->|<!--# include virtual="/one?15" -->|<!--# include virtual="/one?16" -->|<!--# include virtual="/one?17" -->|<!--# include virtual="/one?18" -->|<!--# include virtual="/one?19" -->|<!--# include virtual="/one?20" -->|';
    }
    location = /twice {
        ssi on;
        ssi_types *;
        default_type text/plain;
        return 200 '<!--# include virtual="/one?a" wait="yes" -->|<!--# include virtual="/one?b" wait="yes" -->';
    }
    location = /three {
        ssi on;
        ssi_types *;
        default_type text/plain;
        return 200 '<!--# include virtual="/one?1" -->|<!--# include virtual="/one?2" -->|<!--# include virtual="/one?3" -->';
    }
    location = /one {
        proxy_pass http://127.0.0.1:$server_port/v1/chat/completions;
        proxy_method POST;
        proxy_set_header Content-Type application/json;
        proxy_set_body '{"model": "gpt-4o", "messages": [{"role": "user", "content": "all at once"}]}';
    }
_EOC_

our $Yaml = ">>> helix.yaml\n$Helix::Providers\nadmin:\n  token: adm1n-0123456789abcdef0123456789abcdef\n";

sub chat {
    my ($params, $content) = @_;
    $content //= "cache me";
    $params = $params ? ", $params" : "";
    return "POST /v1/chat/completions\n"
        . qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "$content"}]$params});
}

sub after { my ($secs, $req) = @_; return [{ value => $req, delay_before => $secs }]; }

sub fault { my ($p, $json) = @_; return "POST /mock/$p/faults\n$json"; }

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a miss, then a hit with the same bytes, and one provider call
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", main::chat(), main::chat(), "GET /mock/openai/stats"]
--- response_headers eval
["", "X-Cache: MISS\nX-Cache-Tier:\nX-Helix-Provider: openai",
 "X-Cache: HIT\nX-Cache-Tier: L1\nX-Helix-Provider: openai",
 ""]
--- response_headers_like eval
["", "X-Cache-Key: completion:openai:gpt-4o:[0-9a-f]{32}", "X-Cache-Key: completion:openai:gpt-4o:[0-9a-f]{32}", ""]
--- response_body_like eval
["", '^(\{"id":"chatcmpl-[^"]+",.*)$', '^(\{"id":"chatcmpl-[^"]+",.*)$', '"total":1,']
--- no_error_log
[error]



=== TEST 2: a hit is byte-identical to the first answer (id and created included)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
GET /twice
--- response_body_like: ^(\{"id":"chatcmpl-.+\})\|\1$



=== TEST 3: key order and whitespace in the client's JSON do not matter
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
['POST /v1/chat/completions
{"model": "gpt-4o", "temperature": 0.5, "messages": [{"role": "user", "content": "order"}], "max_tokens": 20}',
'POST /v1/chat/completions
{ "max_tokens" : 20 ,
  "messages":[{"content":"order","role":"user"}],"temperature":0.5,"model":"gpt-4o" }']
--- response_headers eval
["X-Cache: MISS", "X-Cache: HIT"]



=== TEST 4: every parameter that changes the output changes the key
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[main::chat(), main::chat('"temperature": 0.3'), main::chat('"top_p": 0.9'), main::chat('"max_tokens": 7'),
 main::chat('"stop": ["x"]'), main::chat('"n": 2'), main::chat(undef, "other words"),
 main::chat('"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]'),
 main::chat('"presence_penalty": 0.1'), main::chat('"seed": 3'),
 'POST /v1/chat/completions
{"model": "mock-shared", "messages": [{"role": "user", "content": "cache me"}]}',
 'POST /v1/chat/completions
{"model": "gpt-4o", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "cache me"}]}',
 main::chat('"user": "someone else", "stream": false')]
--- response_headers eval
[("X-Cache: MISS") x 12, "X-Cache: HIT"]



=== TEST 5: chat, completions and embeddings keys are apart, embeddings cached too
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
['POST /v1/completions
{"model": "gpt-4o", "prompt": "cache me"}',
 main::chat(),
 'POST /v1/embeddings
{"model": "text-embedding-3-small", "input": ["e1", "e2"]}',
 'POST /v1/embeddings
{"model": "text-embedding-3-small", "input": ["e1", "e2"]}',
 'POST /v1/completions
{"model": "gpt-4o", "prompt": "cache me"}']
--- response_headers eval
["X-Cache: MISS", "X-Cache: MISS", "X-Cache: MISS", "X-Cache: HIT", "X-Cache: HIT"]
--- response_headers_like eval
["X-Cache-Key: completion:openai:gpt-4o:\\w+", "", "X-Cache-Key: embedding:openai:text-embedding-3-small:\\w+", "", ""]
--- response_body_like eval
['"object":"text_completion"', '"object":"chat.completion"', '"object":"list"', '"object":"list"', '"object":"text_completion"']



=== TEST 6: Cache-Control: no-cache reads around the cache (and still stores); no-store does not store
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers eval
["", "", "Cache-Control: no-cache", "", "Cache-Control: no-store", "Cache-Control: no-store", ""]
--- request eval
["POST /mock/reset", main::chat(), main::chat(), main::chat(), main::chat(undef, "x2"), main::chat(undef, "x2"), main::chat(undef, "x2")]
--- response_headers eval
["", "X-Cache: MISS", "X-Cache: BYPASS", "X-Cache: HIT", "X-Cache: MISS\nX-Cache-Key:", "X-Cache: MISS\nX-Cache-Key:", "X-Cache: MISS"]



=== TEST 7: helix_cache_policy off: never cached
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /nocache/v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "n"}]}',
 "POST /nocache/v1/chat/completions\n" . '{"model": "gpt-4o", "messages": [{"role": "user", "content": "n"}]}']
--- response_headers eval
["X-Cache: BYPASS", "X-Cache: BYPASS"]



=== TEST 8: errors are not cached
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    models: [gpt-4o]
--- request eval
["POST /mock/reset", main::fault(openai => '{"status": 500, "count": 1}'), main::chat(), main::chat(), main::chat(), "GET /mock/openai/stats"]
--- error_code eval: [200, 200, 502, 200, 200, 200]
--- response_headers eval
["", "", "", "X-Cache: MISS", "X-Cache: HIT", ""]
--- response_body_like eval
["", "", "", "", "", '"total":2,']



=== TEST 9: an entry lives for its policy's TTL
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\ncache:\n  policies:\n    completions:\n      ttl: 300ms\n"
--- request eval
[main::chat(), main::chat(), main::after(0.6, main::chat()), main::chat()]
--- response_headers eval
["X-Cache: MISS", "X-Cache: HIT", "X-Cache: MISS", "X-Cache: HIT"]



=== TEST 10: cache.l1.ttl caps every policy's TTL in L1
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\ncache:\n  l1:\n    ttl: 300ms\n"
--- request eval
[main::chat(), main::chat(), main::after(0.6, main::chat())]
--- response_headers eval
["X-Cache: MISS", "X-Cache: HIT", "X-Cache: MISS"]



=== TEST 11: at cache.l1.max_size the least recently used entry goes
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\ncache:\n  l1:\n    max_size: 2\n"
--- request eval
[main::chat(undef, "A"), main::chat(undef, "B"), main::chat(undef, "A"), main::chat(undef, "C"),
 main::chat(undef, "B"), main::chat(undef, "A")]
--- response_headers eval
["X-Cache: MISS", "X-Cache: MISS", "X-Cache: HIT", "X-Cache: MISS", "X-Cache: MISS", "X-Cache: MISS"]



=== TEST 12: a policy's max_size bounds its own entries only
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\ncache:\n  policies:\n    completions:\n      max_size: 1\n"
--- request eval
['POST /v1/embeddings
{"model": "text-embedding-3-small", "input": "kept"}',
 main::chat(undef, "A"), main::chat(undef, "B"), main::chat(undef, "A"),
 'POST /v1/embeddings
{"model": "text-embedding-3-small", "input": "kept"}']
--- response_headers eval
["X-Cache: MISS", "X-Cache: MISS", "X-Cache: MISS", "X-Cache: MISS", "X-Cache: HIT"]



=== TEST 13: when the zone's bytes run out, old answers make room: no error
--- http_config eval: $::HttpConfig . "    helix_cache_zone 128k;\n"
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[map { main::chat(undef, "LONG:3000 number $_") } 1..8]
--- error_code eval: [(200) x 8]
--- response_headers eval
[("X-Cache: MISS") x 8]
--- no_error_log
[error]
[crit]



=== TEST 14: reload keeps the cached answers
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- reload_user_files eval: $::Yaml
--- request eval
[main::chat(), main::chat()]
--- response_headers eval
["X-Cache: MISS", "X-Cache: HIT"]



=== TEST 15: 20 concurrent identical requests make one provider call
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/reset", main::fault(openai => '{"latency_ms": 300, "count": 1}'), "GET /many", "GET /mock/openai/stats"]
--- response_body_like eval
["", "", '^(\{"id":"chatcmpl-[^"|]+","object":"chat.completion"[^|]*"content":"Mock answer [0-9a-f]+ to: all at once[^|]*\}\|){20}$', '"total":1,']



=== TEST 16: if the call they wait for fails, one of the others asks in its place, and the last gets its answer
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files
>>> helix.yaml
providers:
  openai:
    type: openai
    models: [gpt-4o]
--- request eval
["POST /mock/reset", main::fault(openai => '{"latency_ms": 300, "status": 500, "count": 1}'), "GET /three", "GET /mock/openai/stats"]
--- response_body_like eval
["", "", '^[^|]*\|[^|]*\|[^|]*$', '"total":2,']
--- response_body_unlike eval
['NOMATCH', 'NOMATCH', '\{"error"[^|]*\|.*\{"error"', '"total":[^2]']



=== TEST 17: the admin API wants the admin token: 401 without, 403 when wrong
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers eval
["", "Authorization: Bearer nope", "Authorization: Basic YWRtMW4tMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "Authorization: Bearer adm1n-0123456789abcdef0123456789abcdef"]
--- request eval
[("POST /v1/admin/cache/clear") x 4]
--- error_code eval: [401, 403, 401, 200]
--- response_body_like eval
['"code":"missing_admin_token"', '"message":"wrong admin token","type":"permission_error"', '"code":"missing_admin_token"', '^\{"removed":0,"tiers":\{"l1":0\},"pattern":null\}$']



=== TEST 18: clear by pattern removes the matching keys only; clear all removes the rest
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers eval
["", "", "", "Authorization: Bearer adm1n-0123456789abcdef0123456789abcdef", "", "", "Authorization: Bearer adm1n-0123456789abcdef0123456789abcdef", ""]
--- request eval
[main::chat(),
 'POST /v1/chat/completions
{"model": "claude-3-haiku-20240307", "messages": [{"role": "user", "content": "c"}]}',
 'POST /v1/embeddings
{"model": "text-embedding-3-small", "input": "e"}',
 "POST /v1/admin/cache/clear\n" . '{"pattern": "completion:claude:*"}',
 'POST /v1/chat/completions
{"model": "claude-3-haiku-20240307", "messages": [{"role": "user", "content": "c"}]}',
 main::chat(),
 "POST /v1/admin/cache/clear",
 main::chat()]
--- response_headers eval
["X-Cache: MISS", "X-Cache: MISS", "X-Cache: MISS", "", "X-Cache: MISS", "X-Cache: HIT", "", "X-Cache: MISS"]
--- response_body_like eval
["", "", "", '^\{"removed":1,"tiers":\{"l1":1\},"pattern":"completion:claude:\*"\}$', "", "", '^\{"removed":3,"tiers":\{"l1":3\},"pattern":null\}$', ""]



=== TEST 19: cleanup drops the expired entries and says how many
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: ">>> helix.yaml\n$Helix::Providers\nadmin:\n  token: adm1n-0123456789abcdef0123456789abcdef\ncache:\n  policies:\n    completions:\n      ttl: 200ms\n"
--- more_headers eval
["", "", "", "Authorization: Bearer adm1n-0123456789abcdef0123456789abcdef"]
--- request eval
[main::chat(undef, "a"), main::chat(undef, "b"),
 'POST /v1/embeddings
{"model": "text-embedding-3-small", "input": "e"}',
 main::after(0.5, "POST /v1/admin/cache/cleanup")]
--- response_body_like eval
["", "", "", '^\{"removed":2,"tiers":\{"l1":2\},"pattern":null\}$']



=== TEST 20: the same bytes again are found without parsing them; a cleared entry is not found through them
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers eval
["", "", "", "Authorization: Bearer adm1n-0123456789abcdef0123456789abcdef", ""]
--- request eval
["POST /mock/reset", main::chat(undef, "fast"), main::chat(undef, "fast"),
 "POST /v1/admin/cache/clear\n" . '{"pattern": "completion:openai:*"}',
 main::chat(undef, "fast")]
--- response_headers eval
["", "X-Cache: MISS", "X-Cache: HIT", "", "X-Cache: MISS"]
--- response_body_like eval
["", "", "", '"removed":1,', ""]



=== TEST 21: /health counts the cache
--- http_config eval: $::HttpConfig
--- config eval: $::Config . "    location = /health { helix_endpoint health; }\n"
--- user_files eval: $::Yaml
--- request eval
[main::chat(undef, "h1"), main::chat(undef, "h1"), main::chat(undef, "h2"), "GET /health"]
--- response_body_like eval
["", "", "", '"cache":\{"l1":true,"entries":2,"bytes":\d+,"hits":1,"misses":2,"evictions":0\}']
