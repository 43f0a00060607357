# Responses answers and stream events from each provider (text, tools,
# the incomplete status) validated against OpenAI's published OpenAPI
# description (util/openapi-check.py).  Skipped without that description
# (HELIX_OPENAPI, or ../shared/openapi/openai-openapi.yaml) or without
# python3-jsonschema and python3-yaml.
use Test::Nginx::Socket;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Temp qw(tempdir);
use Helix;

our $Top = abs_path(dirname(__FILE__) . "/..");
our ($Spec) = grep { $_ && -f $_ } ($ENV{HELIX_OPENAPI},
    "$Top/../shared/openapi/openai-openapi.yaml", "/work/shared/openapi/openai-openapi.yaml");

if (!$Spec) {
    plan skip_all => "OpenAI's OpenAPI description not found (set HELIX_OPENAPI)";
} elsif (system("python3 -c 'import jsonschema, yaml' 2>/dev/null") != 0) {
    plan skip_all => "python3 jsonschema or yaml missing (make deps)";
} else {
    plan 'no_plan';
}

our $Dir = tempdir(CLEANUP => 1);
our $HttpConfig = Helix::http_config();
our $Config = Helix::config(cache => 0, extra => "    location = /v1/responses { helix_endpoint responses; }\n");
our $Yaml = ">>> helix.yaml\n$Helix::Providers\nstreaming:\n  flush_interval: 0\n";
our $Tool = q{"tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]};
our @Req = map { my $m = $_; map { qq{POST /v1/responses\n{"model": "$m", $_}} } (
    q{"instructions": "be brief", "input": "Hello"},
    q{"max_output_tokens": 5, "input": "Hello"},
    qq{$Tool, "input": "weather in Paris"},
    q{"stream": true, "input": "Hello"},
    q{"stream": true, "max_output_tokens": 5, "input": "Hello"},
    qq{"stream": true, $Tool, "input": "weather in Paris"}) }
  ('gpt-4o', 'claude-3-haiku-20240307', 'gemini-1.5-flash');

our $N = 0;
sub keep {
    open my $f, '>', sprintf("%s/%02d", $Dir, $N++) or return "cannot write: $!";
    print $f $_[0];
    close $f;
    return "";
}

# the last answer kept, all are checked
sub check {
    keep($_[0]);
    my $out = `python3 $Top/util/openapi-check.py $Spec $Dir/* 2>&1`;
    return $out =~ /^valid (\d+) invalid 0$/m && $1 > 18 ? "all valid" : $out;
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: Response objects and every stream event, from each provider, valid against the published schema
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: $::Yaml
--- request eval
[@::Req]
--- response_body_filters eval
Helix::per_request([(\&main::keep) x 17, \&main::check])
--- response_body eval
[("") x 17, "all valid"]
--- no_error_log
[error]
