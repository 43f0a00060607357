# The official OpenAI SDK (npm "openai", installed by util/sdk-check.sh
# under build/sdk) against /v1/responses: text, function tools and their
# outputs, streams (events and the stream helper), errors, through each
# provider.  Skipped when node or the SDK is not there.
use Test::Nginx::Socket;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use Helix;

our $Dir = abs_path(dirname(__FILE__) . "/..") . "/build/sdk";

if (!`node --version 2>/dev/null` || !-d "$Dir/node_modules/openai/resources/responses") {
    plan skip_all => "node or the openai SDK (with responses) missing (util/sdk-check.sh installs it in build/sdk)";
} else {
    plan 'no_plan';
}

our $HttpConfig = Helix::http_config();
our $Config = Helix::config(extra =>
    "    location = /v1/responses { helix_endpoint responses; }\n");
our $Yaml = ">>> helix.yaml\n$Helix::Providers\nstreaming:\n  flush_interval: 0\n";

# run once the server is up: the SDK's last line, or what went wrong
sub sdk {
    system("cp", dirname(__FILE__) . "/../util/sdk-check-responses.mjs", $Dir) == 0
        or return "cannot copy the script";
    my $out = `cd $Dir && HELIX_URL=http://127.0.0.1:$ENV{TEST_NGINX_SERVER_PORT}/v1 HELIX_MODELS='gpt-4o claude-3-haiku-20240307 gemini-1.5-flash' timeout 120 node sdk-check-responses.mjs 2>&1`;
    return $out =~ /^responses sdk: ok$/m ? "ok" : $out;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: the OpenAI SDK's responses API, unchanged but for its base URL: every call through every provider
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
