package HelixSchema;

# Answers checked against OpenAI's published OpenAPI schemas by
# util/schema-check.py (one python process per test file, --serve).
# The schemas are reference data outside the project: $HELIX_OPENAPI, by
# default ../shared/openapi/openai-openapi.yaml beside the checkout.
#
#   BEGIN { if (my $why = HelixSchema::missing()) { ... skip_all ... } }
#   --- response_body_filters eval
#   Helix::per_request([HelixSchema::as('CreateChatCompletionResponse')])
#   --- response_body: valid
#
# A filter gives "valid", or "invalid: <where>: <why>" from the validator,
# so a failing block shows what the schema refused.

use strict;
use warnings;

use Encode ();
use File::Basename ();
use File::Spec ();
use IPC::Open2 ();
use JSON::PP ();

my $script = File::Spec->catfile(File::Basename::dirname(__FILE__),
                                 File::Spec->updir, File::Spec->updir,
                                 'util', 'schema-check.py');
my ($pid, $owner, $to, $from);

# why the schema checks cannot run here (a reason for skip_all), or undef
sub missing {
    my $why = `python3 '$script' --missing 2>&1`;
    return undef if $? == 0;
    chomp $why;
    return "schema checks skipped: "
        . ($why ne '' ? $why : "python3 $script does not run");
}

# "valid" or "invalid: ..." for one answer body: a JSON document, or with
# sse => 1 every data: chunk of a stream; base64 => 1 decodes embedding
# strings (encoding_format=base64) first
sub check {
    my ($schema, $body, %o) = @_;
    my ($text, $line);

    $text = eval { Encode::decode('UTF-8', $body, Encode::FB_CROAK) };
    return "invalid: not UTF-8" unless defined $text;

    unless ($pid) {
        $pid = IPC::Open2::open2($from, $to, 'python3', $script, '--serve');
        $owner = $$;
    }
    print {$to} JSON::PP->new->utf8->canonical->encode({
        schema => $schema, body => $text,
        sse => $o{sse} ? JSON::PP::true : JSON::PP::false,
        base64 => $o{base64} ? JSON::PP::true : JSON::PP::false,
    }), "\n";
    $to->flush;
    $line = <$from>;
    return "invalid: util/schema-check.py gave no answer" unless defined $line;
    chomp $line;
    return $line;
}

# a response body filter that checks against $schema
sub as {
    my ($schema, %o) = @_;
    return sub { check($schema, $_[0], %o) };
}

END {
    if ($pid && $owner == $$) {
        close $to;
        waitpid $pid, 0;
    }
}

1;
