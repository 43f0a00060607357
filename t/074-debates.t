# POST /v1/debates: participants answer in rounds, each round at once,
# each participant then hearing the others' answers; the judge (or the
# last round's majority) concludes.  Each call goes through the normal
# path (cache, metrics, the completion log under the debate's id); the
# whole debate is cached under the "debates" policy; a participant that
# fails leaves unless fail_fast; "stream": true sends SSE events; a debate
# runs as a background task with its callback.  The mock answers are a
# function of the conversation, so every round's answers differ.
use Test::Nginx::Socket 'no_plan';
use HTTP::Tiny;
use JSON::PP;
use Helix;
use HelixPg;

master_on();
workers(1);

HelixPg::reset();

our $Port = $ENV{TEST_NGINX_SERVER_PORT};
our $Base = "http://127.0.0.1:$Port";
our $Hooks = "$ENV{TEST_NGINX_SERVER_ROOT}/logs/webhook.log";

our $HttpConfig = Helix::http_config(extra => <<'_EOC_');
    log_format helix_wh escape=none '$status|$request_body';
_EOC_

our $Config = Helix::config(extra => <<"_EOC_");
    location = /v1/debates { helix_endpoint debates; }
    location /v1/tasks { helix_endpoint tasks; }
    location = /callback {
        access_log logs/webhook.log helix_wh;
        client_body_buffer_size 256k;
        proxy_method GET;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_pass http://127.0.0.1:$ENV{TEST_NGINX_OPENAI_PORT}/v1/models;
    }
_EOC_

sub yaml {
    return ">>> helix.yaml\n$Helix::Providers" . HelixPg::yaml()
        . "tasks:\n  poll_interval: 300ms\n  callback_allow: [127.0.0.0/8]\n"
        . ($_[0] // '');
}

our $Three = '[{"model": "gpt-4o", "role": "advocate"}, '
    . '{"model": "claude-3-haiku-20240307", "role": "critic"}, '
    . '{"model": "gemini-1.5-flash"}]';

sub debate {
    my ($topic, $extra) = @_;
    $extra = $extra ? ", $extra" : '';
    return qq(POST /v1/debates\n{"topic": "$topic $$", "participants": $Three, "max_tokens": 6$extra});
}

sub fault { my ($p, $json) = @_; return "POST /mock/$p/faults\n$json"; }

# a debate's answer, in lines a test can compare
sub summary {
    my $d = eval { decode_json($_[0]) } or return "not JSON: $_[0]";
    return "error $d->{error}{code}: $d->{error}{message}\n"
        . rounds($d->{transcript}) if $d->{error};
    my @l = ("$d->{object} rounds $d->{rounds}" . ($d->{id} =~ /^debate-[0-9a-f]{16}$/ ? ' id ok' : " id $d->{id}"));
    push @l, rounds($d->{transcript});
    my ($pt, $ct) = (0, 0);
    for my $p (@{ $d->{participants} }) {
        push @l, "p$p->{participant} $p->{model}" . ($p->{role} ? " ($p->{role})" : '')
            . " $p->{status}" . ($p->{left_in_round} ? " in round $p->{left_in_round}: $p->{error}{code}" : '');
        $pt += $p->{usage}{prompt_tokens};
        $ct += $p->{usage}{completion_tokens};
    }
    if (my $j = $d->{judge}) {
        push @l, "judge $j->{model} $j->{outcome}" . ($j->{provider} ? " $j->{provider}" : '')
            . (defined $j->{time_ms} ? ' timed' : '');
        $pt += $j->{usage}{prompt_tokens};
        $ct += $j->{usage}{completion_tokens};
    }
    my $c = $d->{conclusion};
    push @l, "conclusion by $c->{by} $c->{model}"
        . (defined $c->{votes} ? " p$c->{participant} votes $c->{votes}" : '')
        . ($c->{content} =~ /^Mock answer [0-9a-f]{8} to: / ? ' text ok' : " text $c->{content}");
    my $u = $d->{usage};
    push @l, ($u->{prompt_tokens} == $pt && $u->{completion_tokens} == $ct
              && $u->{total_tokens} == $pt + $ct && $pt > 0)
             ? "usage sums" : "usage $u->{prompt_tokens}/$u->{completion_tokens} vs $pt/$ct";
    return join("\n", @l) . "\n";
}

sub rounds {
    my ($t) = @_;
    my @l;
    for my $r (@{ $t // [] }) {
        push @l, "round $r->{round}" . ($r->{time_ms} =~ /^\d+$/ ? '' : ' no time') . ': '
            . join(', ', map { answer($_) } @{ $r->{answers} });
    }
    return join("\n", @l);
}

sub answer {
    my ($a) = @_;
    my $s = "p$a->{participant} $a->{outcome}";
    $s .= " $a->{provider}" if $a->{provider};
    $s .= " $a->{cache}" if $a->{cache};
    $s .= " $a->{status} $a->{error}{code}" if $a->{error};
    $s .= " no text" if $a->{outcome} eq 'ok' && $a->{content} !~ /^Mock answer/;
    return $s;
}

# an SSE answer: the events in order, answers of a round sorted (they
# come as they complete), then the conclusion's summary
sub events {
    my @ev;
    for my $e (split /\n\n/, $_[0]) {
        my ($name) = $e =~ /^event: (\S+)$/m or return "bad event: $e";
        my ($data) = $e =~ /^data: (.*)$/m;
        if ($name eq 'done') { push @ev, "done $data"; next; }
        my $d = decode_json($data);
        if ($name eq 'debate.round.started') {
            push @ev, "started $d->{round} [@{ $d->{participants} }]";
        } elsif ($name eq 'debate.answer') {
            push @ev, "answer $d->{round} " . answer($d);
        } elsif ($name eq 'debate.round.completed') {
            push @ev, "completed $d->{round} answered $d->{answered} failed $d->{failed}";
        } elsif ($name eq 'debate.conclusion') {
            push @ev, "conclusion by $d->{conclusion}{by} $d->{conclusion}{model}"
                . ($d->{usage}{total_tokens} > 0 ? " usage ok" : " no usage");
        } else {
            push @ev, "$name $data";
        }
    }
    # answers of one round in participant order
    my @out;
    while (@ev) {
        my $e = shift @ev;
        if ($e =~ /^answer (\d+)/) {
            my $round = $1;    # a match below would reset $1
            my @a = ($e);
            push @a, shift @ev while @ev && $ev[0] =~ /^answer $round /;
            push @out, sort @a;
        } else {
            push @out, $e;
        }
    }
    return join("\n", @out) . "\n";
}

sub mock_stats_when {
    my ($port, $re) = @_;
    my $body = '';
    for (1 .. 250) {
        $body = HTTP::Tiny->new->get("http://127.0.0.1:$port/_mock/stats")->{content};
        return $body if $body =~ $re;
        select(undef, undef, undef, 0.02);
    }
    return $body;
}

# the bodies the callback receiver got for a task, once there
sub hook {
    my ($id) = @_;
    for (1 .. 600) {
        if (open my $fh, '<', $Hooks) {
            my @l = grep { index($_, qq("task_id":"$id")) >= 0 } <$fh>;
            return $l[0] if @l;
        }
        select(undef, undef, undef, 0.05);
    }
    return '';
}

no_shuffle();
run_tests();

__DATA__

=== TEST 1: three rounds across the three providers: every round's answers, the majority's conclusion, usage summed; each provider asked once a round
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset", main::debate("three rounds", '"rounds": 3'),
 "GET /mock/openai/stats", "GET /mock/claude/stats", "GET /mock/gemini/stats"]
--- response_headers eval
["", "X-Cache: MISS", "", "", ""]
--- response_body_filters eval
Helix::per_request([undef, \&main::summary, undef, undef, undef])
--- response_body_like eval
["",
 '^debate rounds 3 id ok
round 1: p0 ok openai, p1 ok claude, p2 ok gemini
round 2: p0 ok openai, p1 ok claude, p2 ok gemini
round 3: p0 ok openai, p1 ok claude, p2 ok gemini
p0 gpt-4o \(advocate\) in
p1 claude-3-haiku-20240307 \(critic\) in
p2 gemini-1.5-flash in
conclusion by majority gpt-4o p0 votes 1 text ok
usage sums
$',
 '"total":3,', '"total":3,', '"total":3,']



=== TEST 2: the second round's prompt holds the others' answers of the first, after the participant's own
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset", main::debate("prompts", '"rounds": 2'), "GET /mock/claude/stats"]
--- response_body_filters eval
Helix::per_request([sub { "" }, sub { "" }, sub {
    my $s = decode_json($_[0]);
    my $m = $s->{last_request}{body}{messages};
    my $sys = $s->{last_request}{body}{system} // '';
    return join("\n", "system: $sys", map {
        my $c = ref $_->{content} ? join('', map { $_->{text} } @{ $_->{content} }) : $_->{content};
        $c =~ s/Mock answer [0-9a-f]{8} to: .*/ANSWER/g;
        $c =~ s/ \d+$//mg;
        "$_->{role}: $c" } @$m) . "\n" }])
--- response_body eval
["", "", "system: You take part in a debate as the critic.
user: prompts
assistant: ANSWER
user: Round 2 of 2. The other participants answered in round 1:

[1] advocate (gpt-4o):
ANSWER

[3] gemini-1.5-flash:
ANSWER

Consider their answers and give your answer again, revised where they convinced you.
"]



=== TEST 3: the same debate again is answered whole from the cache, without a provider call; as a stream too
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset", main::debate("cached", '"rounds": 3'), main::debate("cached", '"rounds": 3'),
 main::debate("cached", '"rounds": 3, "stream": true'),
 "GET /mock/openai/stats", "GET /mock/claude/stats", "GET /mock/gemini/stats"]
--- response_headers eval
["", "X-Cache: MISS", "X-Cache: HIT", "X-Cache: HIT\nContent-Type: text/event-stream", "", "", ""]
--- response_body_filters eval
Helix::per_request([undef, sub { "" }, \&main::summary, \&main::events, undef, undef, undef])
--- response_body_like eval
["", "",
 '^debate rounds 3 id ok
round 1: p0 ok openai, p1 ok claude, p2 ok gemini
round 2: p0 ok openai, p1 ok claude, p2 ok gemini
round 3: p0 ok openai, p1 ok claude, p2 ok gemini
p0 gpt-4o \(advocate\) in
',
 '^started 1 \[0 1 2\]
answer 1 p0 ok openai
answer 1 p1 ok claude
answer 1 p2 ok gemini
completed 1 answered 3 failed 0
started 2 \[0 1 2\]
(answer 2 .*\n){3}completed 2 answered 3 failed 0
started 3 \[0 1 2\]
(answer 3 .*\n){3}completed 3 answered 3 failed 0
conclusion by majority gpt-4o usage ok
done \[DONE\]
$',
 '"total":3,', '"total":3,', '"total":3,']



=== TEST 4: a stream: each answer as it completes, between its round's started and completed; then the conclusion and done
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset", main::debate("streamed", '"rounds": 3, "stream": true')]
--- response_headers eval
["", "Content-Type: text/event-stream\nX-Cache: MISS"]
--- response_body_filters eval
Helix::per_request([sub { "" }, \&main::events])
--- response_body eval
["", "started 1 [0 1 2]
answer 1 p0 ok openai
answer 1 p1 ok claude
answer 1 p2 ok gemini
completed 1 answered 3 failed 0
started 2 [0 1 2]
answer 2 p0 ok openai
answer 2 p1 ok claude
answer 2 p2 ok gemini
completed 2 answered 3 failed 0
started 3 [0 1 2]
answer 3 p0 ok openai
answer 3 p1 ok claude
answer 3 p2 ok gemini
completed 3 answered 3 failed 0
conclusion by majority gpt-4o usage ok
done [DONE]
"]



=== TEST 5: the judge reads the transcript and concludes; the judge's call is one more on its provider
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset",
 qq(POST /v1/debates\n{"messages": [{"role": "user", "content": "judged $$"}], "participants": [{"model": "claude-3-haiku-20240307"}, {"model": "gemini-1.5-flash", "system": "Be brief."}], "rounds": 2, "judge": {"model": "gpt-4o"}, "max_tokens": 6}),
 "GET /mock/openai/stats"]
--- response_body_filters eval
Helix::per_request([undef, \&main::summary, sub {
    my $b = decode_json($_[0])->{last_request}{body};
    my $u = $b->{messages}[1]{content};
    return join("\n", $b->{messages}[0]{role}, ($u =~ /^The question:\njudged \d+\n\nRound 1:\n\n\[1\] claude-3-haiku-20240307:\nMock answer .*\n\n\[2\] gemini-1.5-flash:\nMock .*\n\nRound 2:\n\n\[1\] .*\n\n\[2\] .*\n\nWrite the final answer to the question\.$/s ? "transcript ok" : "prompt: $u"), "") }])
--- response_body_like eval
["",
 '^debate rounds 2 id ok
round 1: p0 ok claude, p1 ok gemini
round 2: p0 ok claude, p1 ok gemini
p0 claude-3-haiku-20240307 in
p1 gemini-1.5-flash in
judge gpt-4o ok openai timed
conclusion by judge gpt-4o text ok
usage sums
$',
 '^system\ntranscript ok\n$']



=== TEST 6: a participant failing mid-debate leaves it; the others go on; the transcript says so; not cached
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset", main::fault(claude => '{"status": 500, "count": 1, "route": "/v1/messages"}'),
 main::debate("one fails", '"rounds": 3'), main::debate("one fails", '"rounds": 3'),
 "GET /mock/openai/stats"]
--- error_code eval: [200, 200, 200, 200, 200]
--- response_body_filters eval
Helix::per_request([undef, undef, \&main::summary, \&main::summary, undef])
--- response_body_like eval
["", "",
 '^debate rounds 3 id ok
round 1: p0 ok openai, p1 failed 502 provider_error, p2 ok gemini
round 2: p0 ok openai, p2 ok gemini
round 3: p0 ok openai, p2 ok gemini
p0 gpt-4o \(advocate\) in
p1 claude-3-haiku-20240307 \(critic\) left in round 1: provider_error
p2 gemini-1.5-flash in
conclusion by majority gpt-4o p0 votes 1 text ok
usage sums
$',
 '^debate rounds 3 id ok
round 1: p0 ok openai HIT, p1 ok claude, p2 ok gemini HIT
',
 '"total":5,']



=== TEST 7: fail_fast: the first failure ends the debate with a 502 naming it, the others' calls cut
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset",
 main::fault(openai => '{"latency_ms": 5000, "count": 1}'),
 main::fault(gemini => '{"status": 503, "count": 1}'),
 main::debate("fail fast", '"rounds": 3, "fail_fast": true'),
 "GET /mock/openai/stats"]
--- error_code eval: [200, 200, 200, 502, 200]
--- response_body_filters eval
Helix::per_request([undef, undef, undef, \&main::summary, sub { main::mock_stats_when($ENV{TEST_NGINX_OPENAI_PORT}, qr/"aborted":1,/) }])
--- response_body_like eval
["", "", "",
 '^error debate_failed: participant 2 \(gemini-1.5-flash\) failed in round 1 and fail_fast is on: all providers failed: gemini \(HTTP 503[^\n]*
round 1: p0 cancelled, p1 ok claude, p2 failed 502 provider_error$',
 '"total":1,"inflight":0,"peak_inflight":1,"aborted":1,']



=== TEST 8: debates.fail_fast in helix.yaml is the default; the request may turn it off
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("debates:\n  fail_fast: true\n")
--- request eval
["POST /mock/reset",
 main::fault(gemini => '{"status": 503, "count": 2}'),
 main::debate("default fast", '"rounds": 1'),
 main::debate("default slow", '"rounds": 1, "fail_fast": false')]
--- error_code eval: [200, 200, 502, 200]
--- response_body_filters eval
Helix::per_request([undef, undef, \&main::summary, \&main::summary])
--- response_body_like eval
["", "", '^error debate_failed: participant 2 ',
 'round 1: p0 ok openai, p1 ok claude, p2 failed 502 provider_error\n']



=== TEST 9: round_timeout cuts a straggler, which leaves; every participant gone is a 502 (504 when the clock did it)
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("debates:\n  round_timeout: 300ms\n")
--- request eval
["POST /mock/reset",
 main::fault(claude => '{"latency_ms": 5000, "count": 1}'),
 main::debate("straggler", '"rounds": 2'),
 "GET /mock/claude/stats",
 main::debate("all slow MOCK_LATENCY_MS:3000", '"rounds": 2')]
--- error_code eval: [200, 200, 200, 200, 504]
--- response_body_filters eval
Helix::per_request([undef, undef, \&main::summary, sub { main::mock_stats_when($ENV{TEST_NGINX_ANTHROPIC_PORT}, qr/"aborted":1,/) }, \&main::summary])
--- response_body_like eval
["", "",
 '^debate rounds 2 id ok
round 1: p0 ok openai, p1 timeout, p2 ok gemini
round 2: p0 ok openai, p2 ok gemini
',
 '"total":1,"inflight":0,"peak_inflight":1,"aborted":1,',
 '^error debate_failed: every participant had failed by round 1
round 1: p0 timeout, p1 timeout, p2 timeout$']
--- error_log
round 1 timed out, 1 of 3 calls still pending are cancelled



=== TEST 10: every call's row in the completion log, under the debate's id: participants by round, then the judge
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset",
 qq(POST /v1/debates\n{"topic": "logged $$", "participants": [{"model": "gpt-4o"}, {"model": "gemini-1.5-flash"}], "rounds": 2, "judge": {"model": "claude-3-haiku-20240307"}, "max_tokens": 6})]
--- more_headers
X-Session-ID: sess-debate
--- response_body_filters eval
Helix::per_request([sub { "" }, sub {
    my ($id) = $_[0] =~ /"id":"(debate-[0-9a-f]+)"/ or return "no id";
    HelixPg::wait_sql("SELECT count(*) FROM completions WHERE session_id = 'sess-debate'", qr/^5$/);
    my $rows = HelixPg::psql("SELECT endpoint, replace(request_id, '$id', 'D'), model, provider_id, cache_result, status, "
        . "prompt_tokens > 0 FROM completions WHERE session_id = 'sess-debate' ORDER BY request_id");
    return "$rows\n" }])
--- response_body eval
["", "debate|D-0|gpt-4o|openai|miss|200|t
debate|D-1|gemini-1.5-flash|gemini|miss|200|t
debate|D-2|gpt-4o|openai|miss|200|t
debate|D-3|gemini-1.5-flash|gemini|miss|200|t
debate|D-4|claude-3-haiku-20240307|claude|miss|200|t
"]



=== TEST 11: a debate as a background task: the callback gets the whole debate
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
"POST /v1/tasks\n" . qq({"type": "debate", "payload": {"topic": "a task $$", "participants": $main::Three, "rounds": 2, "max_tokens": 6, "callback_url": "$main::Base/callback"}})
--- error_code: 202
--- response_body_filters eval
sub {
    my ($id) = $_[0] =~ /"task_id":"([^"]+)"/ or return "bad answer: $_[0]";
    my ($status, $body) = split /\|/, main::hook($id), 2;
    my $cb = eval { decode_json($body) } or return "callback: $body";
    return "callback HTTP $status, task $cb->{status}\n" . main::summary(encode_json($cb->{result}));
}
--- response_body_like eval
'^callback HTTP 200, task completed
debate rounds 2 id ok
round 1: p0 ok openai, p1 ok claude, p2 ok gemini
round 2: p0 ok openai, p1 ok claude, p2 ok gemini
'



=== TEST 12: bad input: OpenAI-style errors naming the field; one error, not one per participant, and no provider call
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset",
 qq(POST /v1/debates\n{"participants": [{"model": "gpt-4o"}]}),
 qq(POST /v1/debates\n{"topic": "x", "messages": [], "participants": [{"model": "gpt-4o"}]}),
 qq(POST /v1/debates\n{"topic": "x", "participants": []}),
 qq(POST /v1/debates\n{"topic": "x", "participants": [{"role": "critic"}]}),
 qq(POST /v1/debates\n{"topic": "x", "participants": [{"model": "gpt-4o"}, {"model": "nobody-serves-this"}]}),
 qq(POST /v1/debates\n{"topic": "x", "participants": [{"model": "gpt-4o"}], "rounds": 6}),
 qq(POST /v1/debates\n{"topic": "x", "participants": [{"model": "gpt-4o"}], "rounds": "two"}),
 qq(POST /v1/debates\n{"topic": "x", "participants": [{"model": "gpt-4o"}], "judge": {"model": "nobody"}}),
 qq(POST /v1/debates\n{"topic": "x", "participants": [{"model": "gpt-4o"}], "judge": "gpt-4o"}),
 qq(POST /v1/debates\n{"topic": "x", "participants": [{"model": "gpt-4o"}], "stream": "yes"}),
 qq(POST /v1/debates\n{"topic": "x", "participants": [{"model": "gpt-4o"},{"model": "gpt-4o"},{"model": "gpt-4o"},{"model": "gpt-4o"},{"model": "gpt-4o"},{"model": "gpt-4o"}]}),
 qq(POST /v1/debates\n{"topic": "x", "participants": [{"model": "gpt-4o"}, {"model": "gemini-1.5-flash"}], "max_tokens": -3, "stream": true}),
 qq(POST /v1/debates\n[1, 2]),
 "GET /mock/openai/stats"]
--- error_code eval: [200, 400, 400, 400, 400, 404, 400, 400, 404, 400, 400, 400, 400, 400, 200]
--- response_body_like eval
["",
 '^\{"error":\{"message":"a debate needs a \\\\"topic\\\\" or \\\\"messages\\\\"","type":"invalid_request_error","param":"topic","code":"missing_field"\}\}$',
 '"param":"topic","code":"invalid_value"',
 '"param":"participants","code":"invalid_type"',
 '"param":"participants\[0\].model","code":"missing_field"',
 '^\{"error":\{"message":"model \\\\"nobody-serves-this\\\\" is not served by any configured provider \(see GET /v1/models\)","type":"not_found_error","param":"participants\[1\].model","code":"model_not_found"\}\}$',
 '"message":"\\\\"rounds\\\\" must be an integer from 1 to 5 \(debates.max_rounds\)",.*"param":"rounds","code":"invalid_value"',
 '"param":"rounds","code":"invalid_value"',
 '"param":"judge.model","code":"model_not_found"',
 '"param":"judge","code":"invalid_type"',
 '"param":"stream","code":"invalid_type"',
 '"message":"a debate may have at most 5 participants \(debates.max_participants\), not 6"',
 '^\{"error":\{"message":"\\\\"max_tokens\\\\" must be [^}]*"param":"max_tokens"',
 '"code":"invalid_json"',
 '"total":0,']



=== TEST 13: a client that leaves a stream cancels every call and gives every place back
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml()
--- request eval
["POST /mock/reset",
 main::debate("abandoned MOCK_LATENCY_MS:5000", '"stream": true'),
 "GET /v1/health",
 "GET /mock/gemini/stats"]
--- timeout: 0.5
--- abort
--- wait_for_log eval
[undef, undef, "client prematurely closed connection", undef]
--- response_body_filters eval
Helix::per_request([undef, undef, undef, sub { main::mock_stats_when($ENV{TEST_NGINX_GEMINI_PORT}, qr/"aborted":1,/) }])
--- response_body_like eval
["", "", '"inflight":0,"status":"ok"', '"total":1,"inflight":0,"peak_inflight":1,"aborted":1,']



=== TEST 14: the debates block is checked by nginx -t with the file and line
--- http_config eval: $::HttpConfig
--- config eval: $::Config
--- user_files eval: main::yaml("debates:\n  max_rounds: 0\n")
--- must_die
--- error_log eval
qr/helix\.yaml:\d+: debates\.max_rounds: must be from 1 to 20, got 0/
