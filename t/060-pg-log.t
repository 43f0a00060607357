# The completion log: a row in "completions" per chat/completion/
# embedding request, written after the answer, batched; kept in a bounded
# buffer while PostgreSQL is down, the overflow counted and logged.
use Test::Nginx::Socket 'no_plan';
use HTTP::Tiny;
use Helix;
use HelixPg;

HelixPg::reset();

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<'_EOC_');
    location = /metrics { helix_endpoint metrics; }
    location = /v1/completions/batch { helix_endpoint completions_batch; }
    location = /v1/ensemble/completions { helix_endpoint ensemble; }
_EOC_

sub yaml {
    my ($db) = @_;
    return ">>> helix.yaml\n$Helix::Providers" . HelixPg::yaml($db)
        . "tasks:\n  enabled: false\n";
}

sub chat {
    my ($c) = @_;
    return "POST /v1/chat/completions\n"
        . qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "$c $$"}]});
}

sub wait_log {
    my ($re) = @_;
    for (1 .. 400) {
        open my $fh, '<', "$ENV{TEST_NGINX_SERVER_ROOT}/logs/error.log" or return 0;
        local $/;
        return 1 if <$fh> =~ $re;
        select(undef, undef, undef, 0.05);
    }
    return 0;
}

sub rows {
    my ($where, $n) = @_;
    HelixPg::wait_sql("SELECT count(*) FROM completions WHERE $where", qr/^$n$/);
    return HelixPg::psql("SELECT endpoint, cache_result, provider_id, model, stream, "
        . "prompt_tokens > 0, completion_tokens > 0, status, coalesce(session_id, '-'), "
        . "length(request_id), latency_ms >= 0, abs(extract(epoch from now() - created_at)) < 60 "
        . "FROM completions WHERE $where ORDER BY created_at, request_id");
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a miss and then an L1 hit each give a row, with provider, model, tokens, status and session; the hit's tokens are the answer's
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers
X-Session-ID: sess-1
--- request eval
[main::chat("log me"), main::chat("log me")]
--- response_headers eval
["X-Cache: MISS", "X-Cache: HIT"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { main::rows("session_id = 'sess-1'", 2) . "\n"
    . HelixPg::psql("SELECT count(DISTINCT (prompt_tokens, completion_tokens, model)) FROM completions WHERE session_id = 'sess-1'") }])
--- response_body eval
["", "chat_completions|miss|openai|gpt-4o|f|t|t|200|sess-1|32|t|t\nchat_completions|hit_l1|openai|gpt-4o|f|t|t|200|sess-1|32|t|t\n1"]



=== TEST 2: completions and embeddings are logged; an error is logged with its status
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers
X-Session-ID: sess-2
--- request eval
["POST /v1/completions\n" . '{"prompt": "log a completion", "model": "gpt-4o"}',
 "POST /v1/embeddings\n" . '{"input": "log an embedding", "model": "text-embedding-3-small"}',
 "POST /v1/chat/completions\n{broken",
 "GET /v1/models"]
--- error_code eval: [200, 200, 400, 200]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub { "" }, sub { HelixPg::wait_sql("SELECT count(*) FROM completions WHERE session_id = 'sess-2'", qr/^3$/);
    HelixPg::psql("SELECT endpoint, cache_result, coalesce(provider_id, '-'), status, prompt_tokens IS NOT NULL FROM completions WHERE session_id = 'sess-2' ORDER BY created_at, request_id") }])
--- response_body eval
["", "", "", "completions|miss|openai|200|t\nembeddings|miss|openai|200|t\nchat_completions|none|-|400|f"]



=== TEST 2b: a stream is logged too, with its tokens, and its replay from L1
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers
X-Session-ID: sess-2b
--- request eval
["POST /v1/chat/completions\n" . qq({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "stream me $$"}]}),
 "POST /v1/chat/completions\n" . qq({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "stream me $$"}]})]
--- response_body_filters eval
Helix::per_request([sub { $_[0] =~ /data: \[DONE\]/ ? "" : $_[0] }, sub { main::rows("session_id = 'sess-2b'", 2) =~ s/\|sess-2b\|32\|t\|t//gr }])
--- response_body eval
["", "chat_completions|miss|openai|gpt-4o|t|t|t|200\nchat_completions|hit_l1|openai|gpt-4o|t|t|t|200"]



=== TEST 2bb: the row has the gateway's own time and the provider's (us), as Server-Timing said them; a hit has no provider time
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers
X-Session-ID: sess-2bb
--- request eval
[main::chat("timed"), main::chat("timed")]
--- response_headers_like eval
['Server-Timing: ^cache;desc="MISS", gw;dur=\d+\.\d{3}, provider;dur=\d+\.\d{3}$', 'Server-Timing: ^cache;desc="L1", gw;dur=\d+\.\d{3}$']
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { HelixPg::wait_sql("SELECT count(*) FROM completions WHERE session_id = 'sess-2bb'", qr/^2$/);
    HelixPg::psql("SELECT cache_result, gateway_us >= 0, provider_us > 0, provider_us IS NULL FROM completions WHERE session_id = 'sess-2bb' ORDER BY created_at, request_id") }])
--- response_body eval
["", "miss|t|t|f\nhit_l1|t||t"]



=== TEST 2bc: the row has the request's trace id: the client's, or the one the gateway made (as its traceparent says)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers eval
["X-Session-ID: sess-2bc\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "X-Session-ID: sess-2bc"]
--- request eval
[main::chat("traced"), main::chat("traced too")]
--- response_headers_like eval
["traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01", "traceparent: 00-[0-9a-f]{32}-[0-9a-f]{16}-01"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { HelixPg::wait_sql("SELECT count(*) FROM completions WHERE session_id = 'sess-2bc'", qr/^2$/);
    HelixPg::psql("SELECT trace_id = '4bf92f3577b34da6a3ce929d0e0e4736', trace_id ~ '^[0-9a-f]{32}\$' FROM completions WHERE session_id = 'sess-2bc' ORDER BY created_at, request_id") }])
--- response_body eval
["", "t|t\nf|t"]



=== TEST 2c: the API key's name is in the row; an anonymous request has none
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval
main::yaml() . "auth:\n  enabled: false\n  keys:\n    - name: team-blue\n      key: sk-team-blue-1-0123456789abcdef0123456789abcdef\n      unlimited: true\n"
--- more_headers eval
["X-Session-ID: sess-key\nAuthorization: Bearer sk-team-blue-1-0123456789abcdef0123456789abcdef", "X-Session-ID: sess-key"]
--- request eval
[main::chat("keyed"), main::chat("anonymous")]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { main::rows("session_id = 'sess-key'", 2); HelixPg::psql("SELECT coalesce(api_key_name, '-') FROM completions WHERE session_id = 'sess-key' ORDER BY created_at, request_id") }])
--- response_body eval
["", "team-blue\n-"]



=== TEST 2d: every item of a batch and every member of an ensemble has a row, under the batch's id
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers
X-Session-ID: sess-2d
--- request eval
["POST /v1/completions/batch\n" . qq({"requests": [{"prompt": "batch one $$", "model": "gpt-4o"}, {"prompt": "batch two $$", "model": "gpt-4o"}, {"prompt": "batch one $$", "model": "gpt-4o"}, {"prompt": "", "model": "gpt-4o"}], "batch_options": {"parallel": false}}),
 "POST /v1/ensemble/completions\n" . qq({"prompt": "ensemble $$", "model": "mock-shared", "max_tokens": 5})]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { HelixPg::wait_sql("SELECT count(*) FROM completions WHERE session_id = 'sess-2d'", qr/^7$/);
    HelixPg::psql("SELECT endpoint, regexp_replace(request_id, '^[^-]+', 'B'), cache_result, coalesce(provider_id, '-'), status, prompt_tokens IS NOT NULL, "
        . "count(*) OVER (PARTITION BY endpoint, split_part(request_id, '-', 1)) FROM completions WHERE session_id = 'sess-2d' ORDER BY endpoint, request_id") }])
--- response_body eval
["", "completions_batch|B-0|miss|openai|200|t|4
completions_batch|B-1|miss|openai|200|t|4
completions_batch|B-2|hit_l1|openai|200|t|4
completions_batch|B-3|none|-|400|f|4
ensemble|B-0|miss|openai|200|t|3
ensemble|B-1|miss|claude|200|t|3
ensemble|B-2|miss|gemini|200|t|3"]



=== TEST 2e: the row's request_id is nginx's $request_id when something has used it
--- http_config eval: $::HttpConfig
--- config eval: $::Config =~ s/(location = \/v1\/chat\/completions \{)/$1 add_header X-Request-Id \$request_id;/r
--- user_files eval: main::yaml()
--- request
GET /v1/models
--- response_body_filters eval
sub {
    my $res = HTTP::Tiny->new->post("$::Base/v1/chat/completions", {
        headers => { 'Content-Type' => 'application/json', 'X-Session-ID' => 'sess-2e' },
        content => qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "request id $$"}]}) });
    my $id = $res->{headers}{'x-request-id'} // 'none';
    my $row = HelixPg::wait_sql("SELECT request_id FROM completions WHERE session_id = 'sess-2e'", qr/^[0-9a-f]{32}$/);
    return $id =~ /^[0-9a-f]{32}$/ && $row eq $id ? "same id" : "header $id, row $row";
}
--- response_body: same id



=== TEST 3: PostgreSQL down: answers go on, rows wait in the buffer and are written when it is back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers
X-Session-ID: sess-3
--- request eval
["GET /v1/models", main::chat("down 1"), main::chat("down 2"), main::chat("down 3"), main::chat("down 1")]
--- error_code eval: [200, 200, 200, 200, 200]
--- response_body_filters eval
Helix::per_request([sub { HelixPg::stop(); "" }, sub { "" }, sub { "" }, sub { "" },
 sub { main::wait_log(qr/rows kept until PostgreSQL takes them/); HelixPg::start(); main::rows("session_id = 'sess-3'", 4) =~ s/\|t\|t\|200.*//gr }])
--- response_body eval
["", "", "", "", "chat_completions|miss|openai|gpt-4o|f\nchat_completions|miss|openai|gpt-4o|f\nchat_completions|miss|openai|gpt-4o|f\nchat_completions|hit_l1|openai|gpt-4o|f"]
--- error_log eval
[qr/completion log: \d+ rows kept until PostgreSQL takes them/, qr/completion log written again: \d+ rows, 0 dropped/]



=== TEST 4: a full buffer drops rows, counts them and says so; what fitted is written
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("  completion_log:\n    buffer: 1k\n")
--- more_headers
X-Session-ID: sess-4
--- request eval
["GET /v1/models", (map { main::chat("overflow $_") } 1 .. 10), "GET /v1/models"]
--- response_body_filters eval
Helix::per_request([sub { HelixPg::stop(); "" }, (sub { "" }) x 10,
 sub { main::wait_log(qr/rows kept until PostgreSQL takes them/); HelixPg::start();
       my $log = ''; for (1 .. 400) { open my $fh, '<', "$ENV{TEST_NGINX_SERVER_ROOT}/logs/error.log"; local $/; $log = <$fh>;
                                      last if $log =~ /completion log written again/; select(undef, undef, undef, 0.05); }
       my ($dropped) = $log =~ /completion log written again: \d+ rows, (\d+) dropped/ or return "not written again";
       # what fitted may come in two batches (the one in flight, then the rest)
       my $rows = HelixPg::wait_sql("SELECT count(*) FROM completions WHERE session_id = 'sess-4'", qr/^@{[10 - $dropped]}$/);
       # and /metrics says the same, once this worker has heard back
       my $m = '';
       for (1 .. 200) { $m = `curl -s $::Base/metrics`; last if $m =~ /outcome="written"\} $rows\b/; select(undef, undef, undef, 0.05); }
       my ($w) = $m =~ /outcome="written"\} (\d+)/; my ($d) = $m =~ /outcome="dropped"\} (\d+)/;
       ($dropped > 0 && $rows + $dropped == 10 && ($w // -1) == $rows && ($d // -1) == $dropped)
           ? "rows + dropped = 10, as /metrics says" : "rows $rows dropped $dropped, /metrics written @{[$w // '-']} dropped @{[$d // '-']}" }])
--- response_body eval
["", ("") x 10, "rows + dropped = 10, as /metrics says"]
--- error_log eval
[qr/completion log buffer full \(1024 bytes, \d+ rows waiting\): rows are dropped and counted/]



=== TEST 5: rows PostgreSQL rejects are dropped and logged, not sent again forever; the next rows are written
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- more_headers
X-Session-ID: sess-5
--- request eval
["GET /v1/models", main::chat("rejected"), main::chat("accepted")]
--- response_body_filters eval
Helix::per_request([sub { HelixPg::psql("ALTER TABLE completions ADD CONSTRAINT helix_test_no CHECK (session_id <> 'sess-5')"); "" },
 sub { main::wait_log(qr/rows rejected by PostgreSQL and dropped/); HelixPg::psql("ALTER TABLE completions DROP CONSTRAINT helix_test_no"); "" },
 sub { main::rows("session_id = 'sess-5'", 1) =~ s/\|t\|t\|200.*//r }])
--- response_body eval
["", "", "chat_completions|miss|openai|gpt-4o|f"]
--- error_log eval
[qr/completion log: 1 rows rejected by PostgreSQL and dropped: ERROR:  new row for relation "completions" violates check constraint "helix_test_no"/]
