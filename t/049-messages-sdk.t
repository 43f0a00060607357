# The official Anthropic SDK (npm "@anthropic-ai/sdk", installed by
# util/sdk-check.sh under build/sdk) against /v1/messages: text, tools,
# tool results, streams, errors, count_tokens, through each provider.
# Skipped when node or the SDK is not there.
use Test::Nginx::Socket;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Helix;

our $Dir = abs_path(dirname(__FILE__) . "/..") . "/build/sdk";

if (!`node --version 2>/dev/null` || !-d "$Dir/node_modules/\@anthropic-ai/sdk") {
    plan skip_all => "node or \@anthropic-ai/sdk missing (util/sdk-check.sh installs it in build/sdk)";
} else {
    plan 'no_plan';
}

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra =>
    "    location = /v1/messages { helix_endpoint messages; }\n"
  . "    location = /v1/messages/count_tokens { helix_endpoint messages; }\n");
our $Yaml = ">>> helix.yaml\n$Helix::Providers\nstreaming:\n  flush_interval: 0\n";

# run once the server is up: the SDK's last line, or what went wrong
sub sdk {
    system("cp", dirname(__FILE__) . "/../util/sdk-check-anthropic.mjs", $Dir) == 0
        or return "cannot copy the script";
    my $out = `cd $Dir && HELIX_BASE=http://127.0.0.1:$ENV{TEST_NGINX_SERVER_PORT} HELIX_MODELS='gpt-4o claude-3-haiku-20240307 gemini-1.5-flash' timeout 120 node sdk-check-anthropic.mjs 2>&1`;
    return $out =~ /^anthropic sdk: ok$/m ? "ok" : $out;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the Anthropic SDK, unchanged but for its base URL: every call through every provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request
GET /v1/models
--- response_body_filters eval
sub { main::sdk() }
--- response_body: ok
--- no_error_log
[error]
