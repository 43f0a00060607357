# OpenAI-format answers go to the client as they came, checked without a
# jansson tree (ngx_http_helix_provider_openai_pass); anything that is not
# plainly good takes the tree path, which names what is wrong.  Both paths
# must agree: a provider here answers canned bodies from a second server.
use Test::Nginx::Socket 'no_plan';
use Helix;

my $canned_port = $ENV{TEST_NGINX_SERVER_PORT} + 7;

sub http_config {
    my ($body) = @_;
    $body =~ s/\\/\\\\/g;
    $body =~ s/'/\\'/g;
    return Helix::http_config(extra => <<"_EOC_");
    upstream helix_canned {
        server 127.0.0.1:$canned_port;
        keepalive 8;
    }
    server {
        listen 127.0.0.1:$canned_port;
        location / {
            default_type application/json;
            return 200 '$body';
        }
    }
_EOC_
}

our $Config = Helix::config(cache => 0, extra => <<'_EOC_');
    location /_helix/canned/ {
        internal;
        proxy_pass http://helix_canned/;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
    }
    location = /metrics { helix_endpoint metrics; }
_EOC_

our $Yaml = <<'_EOC_';
>>> helix.yaml
providers:
  canned:
    type: openai
    api_key: sk-canned
    models: [canned-chat]
    embedding_models: [canned-embed]
_EOC_

our $Chat = qq(POST /v1/chat/completions\n{"model":"canned-chat","messages":[{"role":"user","content":"hi"}]});
our $Embed = qq(POST /v1/embeddings\n{"model":"canned-embed","input":"hi"});

our $Good = '{"id":"chatcmpl-x","object":"chat.completion","created":1795725492,"model":"canned-chat","choices":[{"index":0,"message":{"role":"assistant","content":"caf\u00e9 \"quoted\""},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":30,"total_tokens":37}}';

sub failed {
    my ($why) = @_;
    return qr/^\{"error":\{"message":"all providers failed: canned \(HTTP 200: invalid answer: $why\)","type":"api_error","param":null,"code":"provider_error"\}\}$/;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a good answer reaches the client byte for byte, tokens counted
--- http_config eval: main::http_config($::Good)
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[$::Chat, "GET /metrics"]
--- error_code eval
[200, 200]
--- response_body_like eval
["^\Q$::Good\E\$", 'helixagent_provider_tokens_total\{provider="canned",kind="prompt"\} 7\n(?s:.*)helixagent_provider_tokens_total\{provider="canned",kind="completion"\} 30\n']
--- response_headers eval
["X-Helix-Provider: canned", "X-Helix-Provider:"]
--- no_error_log
[error]



=== TEST 2: no choices
--- http_config eval: main::http_config('{"id":"x","choices":[],"usage":{"prompt_tokens":1}}')
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval: $::Chat
--- error_code: 502
--- response_body_like eval: main::failed("no choices")



=== TEST 3: a choice without a message
--- http_config eval: main::http_config('{"choices":[{"index":0,"message":{"content":"a"}},{"index":1,"text":"b"}]}')
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval: $::Chat
--- error_code: 502
--- response_body_like eval: main::failed('choices\[1\] has no message')



=== TEST 4: an error object in a 200 answer
--- http_config eval: main::http_config('{"error":{"message":"quota exceeded","type":"insufficient_quota"},"choices":[{"message":{"content":"a"}}]}')
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval: $::Chat
--- error_code: 502
--- response_body_like eval: main::failed("an error answer: quota exceeded")



=== TEST 5: "error": null is a success
--- http_config eval: main::http_config('{"error":null,"choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}')
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval: $::Chat
--- error_code: 200
--- response_body: {"error":null,"choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}



=== TEST 6: an integer too big for 64 bits is refused as before
--- http_config eval: main::http_config('{"created":123456789012345678901,"choices":[{"message":{"content":"a"}}]}')
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval: $::Chat
--- error_code: 502
--- response_body_like eval: main::failed("not JSON: too big integer at byte 11")



=== TEST 7: counts given as reals take the tree path, and still pass through
--- http_config eval: main::http_config('{"choices":[{"message":{"content":"a"}}],"usage":{"prompt_tokens":4.0,"completion_tokens":2.9}}')
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[$::Chat, "GET /metrics"]
--- error_code eval
[200, 200]
--- response_body_like eval
['^\{"choices":\[\{"message":\{"content":"a"\}\}\],"usage":\{"prompt_tokens":4.0,"completion_tokens":2.9\}\}$', 'helixagent_provider_tokens_total\{provider="canned",kind="prompt"\} 4\n(?s:.*)helixagent_provider_tokens_total\{provider="canned",kind="completion"\} 2\n']



=== TEST 8: invalid UTF-8 and a lone surrogate are not JSON
--- http_config eval: main::http_config("{\"choices\":[{\"message\":{\"content\":\"\\ud800 x\"}}]}")
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval: $::Chat
--- error_code: 502
--- response_body_like eval: main::failed('not JSON: invalid Unicode \(lone high surrogate\) at byte 35')



=== TEST 9: embeddings: as many vectors as inputs, numbers or base64
--- http_config eval: main::http_config('{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-1,3e-2]}],"model":"canned-embed","usage":{"prompt_tokens":1,"total_tokens":1}}')
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval: $::Embed
--- error_code: 200
--- response_body: {"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.25,-1,3e-2]}],"model":"canned-embed","usage":{"prompt_tokens":1,"total_tokens":1}}



=== TEST 10: embeddings: one vector too many
--- http_config eval: main::http_config('{"data":[{"embedding":[1]},{"embedding":[2]}]}')
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval: $::Embed
--- error_code: 502
--- response_body_like eval: main::failed("2 embeddings for 1 inputs")



=== TEST 11: embeddings: a vector holding something else than numbers
--- http_config eval: main::http_config('{"data":[{"embedding":[1,[2]]}]}')
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval: $::Embed
--- error_code: 502
--- response_body_like eval: main::failed("embedding 0 is not a vector")
