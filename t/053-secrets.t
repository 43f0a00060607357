# What nginx -t refuses about secrets and the module's calls to itself:
# API keys and the admin token under 32 characters; tasks or warming
# without helix_loopback; a helix_loopback that is a name, not on the
# loopback, or no listen of this nginx; the old endpoint keys.  And the
# shipped helix.yaml holds no key or token, only ${VAR}s without default.
use Test::Nginx::Socket 'no_plan';

our $Port = $ENV{TEST_NGINX_SERVER_PORT};

our $NoLoopback = <<'_EOC_';
    helix_config ../html/helix.yaml;
_EOC_

our $HttpConfig = <<"_EOC_";
    helix_config ../html/helix.yaml;
    helix_loopback 127.0.0.1:$Port;
_EOC_

our $Provider = <<'_EOY_';
providers:
  openai:
    api_key: x
    models: [gpt-4o]
_EOY_

# every secret in the shipped helix.yaml: "key: ..." and "token: ..." lines
sub shipped_secrets {
    open my $fh, '<', 'conf/helix.yaml' or return "cannot read conf/helix.yaml";
    my @bad;
    while (my $l = <$fh>) {
        next unless $l =~ /^\s*(?:-\s+)?(key|token|api_key):\s*(\S.*?)\s*$/;
        my ($k, $v) = ($1, $2);
        # provider keys may default to the mocks' ones; auth and admin not
        next if $k eq 'api_key';
        push @bad, "$k: $v" unless $v =~ /^\$\{[A-Z_]+\}$/;
    }
    return @bad ? "literal or default: @bad" : "none";
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: an API key under 32 characters
--- config
--- http_config eval: $::HttpConfig
--- user_files eval
">>> helix.yaml\n$::Provider" . <<'_EOY_'
auth:
  enabled: true
  keys:
    - name: short
      key: sk-0123456789abcdef0123456789
_EOY_
--- must_die
--- error_log
helix.yaml:9: auth.keys[0].key: too short: 29 characters, a secret needs at least 32



=== TEST 2: a short key from ${VAR:-default} is refused as well
--- config
--- http_config eval: $::HttpConfig
--- user_files eval
">>> helix.yaml\n$::Provider" . <<'_EOY_'
auth:
  keys:
    - name: bench
      key: ${HELIX_TEST_NO_SUCH_VAR:-sk-helix-bench}
_EOY_
--- must_die
--- error_log
helix.yaml:8: auth.keys[0].key: too short: 14 characters



=== TEST 3: an admin token under 32 characters
--- config
--- http_config eval: $::HttpConfig
--- user_files eval
">>> helix.yaml\n$::Provider" . <<'_EOY_'
admin:
  token: adm1n-token
_EOY_
--- must_die
--- error_log
helix.yaml:6: admin.token: too short: 11 characters, a secret needs at least 32



=== TEST 4: 32 characters are enough
--- http_config eval: $::HttpConfig
--- config
location = /v1/models { helix_endpoint models; }
--- user_files eval
">>> helix.yaml\n$::Provider" . <<'_EOY_'
admin:
  token: 0123456789abcdef0123456789abcdef
auth:
  keys:
    - name: edge
      key: sk-3456789abcdef0123456789abcdef
_EOY_
--- request
GET /v1/models
--- error_code: 200



=== TEST 5: background tasks without helix_loopback
--- config
--- http_config eval: $::NoLoopback
--- user_files eval
">>> helix.yaml\n$::Provider" . <<'_EOY_'
database:
  host: 127.0.0.1
  port: 1
_EOY_
--- must_die
--- error_log
helix: background tasks (a database is configured and tasks.enabled is true) call the gateway's own endpoints: say where with "helix_loopback 127.0.0.1:<port>;" in http{}, a listen address of this nginx that serves them, or set tasks.enabled: false



=== TEST 6: a database with tasks off needs no loopback
--- http_config eval: $::NoLoopback
--- config
location = /v1/models { helix_endpoint models; }
--- user_files eval
">>> helix.yaml\n$::Provider" . <<'_EOY_'
database:
  host: 127.0.0.1
  port: 1
tasks:
  enabled: false
_EOY_
--- request
GET /v1/models
--- error_code: 200



=== TEST 7: cache warming without helix_loopback
--- config
--- http_config eval: $::NoLoopback
--- user_files eval
">>> helix.yaml\n$::Provider" . <<'_EOY_'
cache:
  warming:
    enabled: true
    queries:
      - prompt: "hello"
        providers: ["openai"]
_EOY_
--- must_die
--- error_log
helix: cache warming (cache.warming) call the gateway's own endpoints



=== TEST 8: helix_loopback takes no host name (no DNS)
--- config
--- http_config
    helix_config ../html/helix.yaml;
    helix_loopback localhost:8080;
--- user_files eval: ">>> helix.yaml\n$::Provider"
--- must_die
--- error_log
helix_loopback "localhost:8080": expected an IP address and a port, as 127.0.0.1:8080 or [::1]:8080 (no host names)



=== TEST 9: helix_loopback needs a port
--- config
--- http_config
    helix_config ../html/helix.yaml;
    helix_loopback 127.0.0.1;
--- user_files eval: ">>> helix.yaml\n$::Provider"
--- must_die
--- error_log
helix_loopback "127.0.0.1": expected an IP address and a port



=== TEST 10: helix_loopback off the loopback
--- config
--- http_config
    helix_config ../html/helix.yaml;
    helix_loopback 10.0.0.1:8080;
--- user_files eval: ">>> helix.yaml\n$::Provider"
--- must_die
--- error_log
helix_loopback "10.0.0.1:8080" is not on the loopback (127.0.0.0/8 or ::1)



=== TEST 11: an IPv4-mapped IPv6 loopback is not taken either
--- config
--- http_config
    helix_config ../html/helix.yaml;
    helix_loopback [::ffff:127.0.0.1]:8080;
--- user_files eval: ">>> helix.yaml\n$::Provider"
--- must_die
--- error_log
is not on the loopback (127.0.0.0/8 or ::1)



=== TEST 12: helix_loopback where this nginx does not listen
--- config
--- http_config eval
"    helix_config ../html/helix.yaml;\n    helix_loopback 127.0.0.1:" . ($::Port + 11) . ";\n"
--- user_files eval: ">>> helix.yaml\n$::Provider"
--- must_die
--- error_log eval
qr/helix_loopback "127\.0\.0\.1:\d+": no listen directive of this nginx takes that address/



=== TEST 13: tasks.endpoint is no longer read, and says where it went
--- config
--- http_config eval: $::HttpConfig
--- user_files eval
">>> helix.yaml\n$::Provider" . <<'_EOY_'
tasks:
  endpoint: http://127.0.0.1:8080
_EOY_
--- must_die
--- error_log
helix.yaml:6: tasks.endpoint: is no longer read: the module's own calls (tasks, warming) go to the address of "helix_loopback" in nginx.conf



=== TEST 14: cache.warming.endpoint likewise
--- config
--- http_config eval: $::HttpConfig
--- user_files eval
">>> helix.yaml\n$::Provider" . <<'_EOY_'
cache:
  warming:
    endpoint: http://127.0.0.1:8080/v1/completions
_EOY_
--- must_die
--- error_log
helix.yaml:7: cache.warming.endpoint: is no longer read



=== TEST 15: the shipped helix.yaml holds no API key or admin token, only ${VAR} without a default
--- http_config eval: $::HttpConfig
--- config
location = /t { return 200 "ok"; }
--- user_files eval: ">>> helix.yaml\n$::Provider"
--- request
GET /t
--- response_body_filters eval
sub { main::shipped_secrets() }
--- response_body: none
