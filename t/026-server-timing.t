# Server-Timing on every answer of the gateway: where it came from, the
# gateway's own time and the provider's (ms); off with
# "helix_server_timing off".  The gateway's time is also a histogram,
# helixagent_gateway_overhead_seconds{cache}.
use Test::Nginx::Socket 'no_plan';
use Helix;

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra => <<'_EOC_');
    location = /metrics { helix_endpoint metrics; }
    location = /quiet/v1/chat/completions {
        helix_endpoint chat_completions;
        helix_server_timing off;
    }
_EOC_

our $Yaml = ">>> helix.yaml\n$Helix::Providers";

our $Dur = '\d+\.\d{3}';

sub chat {
    my ($content, $more, $path) = @_;
    $more = $more ? ", $more" : "";
    $path //= "/v1/chat/completions";
    return "POST $path\n"
        . qq({"model": "gpt-4o", "messages": [{"role": "user", "content": "$content"}]$more});
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: a miss says the provider's time; a hit from L1 has none; an uncached answer is a BYPASS
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- more_headers eval
["", "", "Cache-Control: no-cache"]
--- request eval
[main::chat("st1"), main::chat("st1"), main::chat("st1")]
--- response_headers_like eval
["Server-Timing: ^cache;desc=\"MISS\", gw;dur=$::Dur, provider;dur=$::Dur\$",
 "Server-Timing: ^cache;desc=\"L1\", gw;dur=$::Dur\$",
 "Server-Timing: ^cache;desc=\"BYPASS\", gw;dur=$::Dur, provider;dur=$::Dur\$"]
--- no_error_log
[error]



=== TEST 2: the provider's time is the provider's: a mock that waits 300 ms makes provider;dur at least 300, not gw
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
["POST /mock/openai/faults\n" . '{"latency_ms": 300, "count": 1}', main::chat("st2")]
--- response_headers_like eval
["", "Server-Timing: ^cache;desc=\"MISS\", gw;dur=\\d+\\.\\d{3}, provider;dur=(3\\d\\d|[4-9]\\d\\d|\\d{4,})\\.\\d{3}\$"]
--- response_body_like eval
["", "chat.completion"]



=== TEST 3: a stream says it in its header: the provider's time to the first frame
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
main::chat("st3", '"stream": true')
--- response_headers_like
Server-Timing: ^cache;desc="MISS", gw;dur=\d+\.\d{3}, provider;dur=\d+\.\d{3}$
--- response_body_like: data: \[DONE\]



=== TEST 4: helix_server_timing off: no header, and the figures are still counted
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[main::chat("st4", undef, "/quiet/v1/chat/completions"), main::chat("st4", undef, "/quiet/v1/chat/completions"), "GET /metrics"]
--- response_headers eval
["Server-Timing:", "Server-Timing:", ""]
--- response_body_like eval
["", "", 'helixagent_gateway_overhead_seconds_count\{cache="l1"\} 1\n(?s:.*)helixagent_gateway_overhead_seconds_count\{cache="miss"\} 1\n']
