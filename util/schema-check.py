#!/usr/bin/env python3
"""schema-check.py - validate gateway answers against OpenAI's OpenAPI schemas.

The OpenAPI description is reference data kept outside the project: the
file named by $HELIX_OPENAPI, by default ../shared/openapi/openai-openapi.yaml
beside the checkout.  It is OpenAPI 3.1 but still writes `nullable: true`,
which JSON Schema does not know: each such schema is read here as "it, or
null" (an enum then admits null too).  $refs resolve against the document.

  util/schema-check.py SCHEMA [FILE]          one JSON document (default
                                              stdin) against
                                              components/schemas/SCHEMA
  util/schema-check.py --sse SCHEMA [FILE]    every `data:` chunk of an SSE
                                              stream; [DONE] must be last;
                                              a chunk with a top-level
                                              "error" is an ErrorResponse
  util/schema-check.py --base64 ...           embedding strings (answers to
                                              encoding_format=base64) are
                                              decoded to numbers first
  util/schema-check.py --serve                one request a line on stdin,
                                              {"schema", "body", "sse",
                                              "base64"}; one answer a line
  util/schema-check.py --missing              say why it cannot run (exit
                                              1), or nothing (exit 0)

Prints "valid", or "invalid: <where>: <why>" and exits 1.  The schema is
only what OpenAI publishes: fields it does not list are allowed, as it
allows them.

Debian: python3-jsonschema, python3-yaml (util/deps.sh).
"""

import base64
import json
import os
import struct
import sys

TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
DEFAULT = os.path.join(TOP, "..", "shared", "openapi", "openai-openapi.yaml")


def spec_path():
    return os.environ.get("HELIX_OPENAPI") or DEFAULT


def missing():
    """why this cannot run here, or None"""
    path = spec_path()
    if not os.path.isfile(path):
        return ("no OpenAPI description at %s (set HELIX_OPENAPI to "
                "OpenAI's openai-openapi.yaml)" % path)
    try:
        import jsonschema  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as e:
        return "%s (Debian: python3-jsonschema python3-yaml)" % e
    return None


def nullable(node):
    """the tree with every `nullable: true` schema made "it or null" """
    if isinstance(node, list):
        return [nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True:
        # anyOf keeps whatever the schema says (type, enum, $ref, allOf)
        # for the non-null case and adds null beside it
        return {"anyOf": [out, {"type": "null"}]}
    return out


class Checker:

    def __init__(self):
        import jsonschema
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        with open(spec_path(), "rb") as f:
            doc = yaml.load(f, Loader=loader)
        self.schemas = nullable(doc["components"]["schemas"])
        self.cls = jsonschema.Draft202012Validator
        self.best = jsonschema.exceptions.best_match
        self.validators = {}

    def validator(self, name):
        if name not in self.schemas:
            raise KeyError("no schema %s in components/schemas" % name)
        v = self.validators.get(name)
        if v is None:
            # the root holds the components so that "#/components/..."
            # resolves without a resolver (whose API changed across
            # jsonschema versions)
            root = {"$ref": "#/components/schemas/" + name,
                    "components": {"schemas": self.schemas}}
            v = self.validators[name] = self.cls(root)
        return v

    def one(self, name, doc):
        """None if doc is valid, else the reason"""
        err = self.best(self.validator(name).iter_errors(doc))
        if err is None:
            return None
        where = "/".join(str(p) for p in err.absolute_path) or "(top)"
        return "%s: %s" % (where, err.message[:400])

    def document(self, name, text, b64=False):
        try:
            doc = json.loads(text)
        except ValueError as e:
            return "not JSON (%s): %.200r" % (e, text)
        if b64:
            why = decode_embeddings(doc)
            if why:
                return why
        return self.one(name, doc)

    def stream(self, name, text, b64=False):
        chunks = sse_data(text)
        if not chunks:
            return "no data: chunk in %.200r" % text
        if chunks[-1] != "[DONE]":
            return "the last chunk is %.200r, not [DONE]" % chunks[-1]
        for i, c in enumerate(chunks[:-1]):
            if c == "[DONE]":
                return "chunk %d: [DONE] before the end" % i
            schema = name
            try:
                if "error" in json.loads(c):
                    schema = "ErrorResponse"
            except (ValueError, TypeError):
                pass
            why = self.document(schema, c, b64)
            if why:
                return "chunk %d (%s): %s" % (i, schema, why)
        return None


def sse_data(text):
    """the data of each event, its data: lines joined by newlines"""
    out, data = [], None
    for line in text.replace("\r\n", "\n").split("\n"):
        if line == "":
            if data is not None:
                out.append("\n".join(data))
            data = None
        elif line.startswith("data:"):
            v = line[5:]
            data = (data or []) + [v[1:] if v.startswith(" ") else v]
    if data is not None:
        out.append("\n".join(data))
    return out


def decode_embeddings(doc):
    """embedding strings (encoding_format=base64: little-endian float32)
    to lists of numbers, as the OpenAI SDK does; the schema types only
    the list form"""
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        return None
    for i, e in enumerate(data):
        if not isinstance(e, dict) or not isinstance(e.get("embedding"), str):
            continue
        try:
            raw = base64.b64decode(e["embedding"], validate=True)
        except ValueError as x:
            return "data/%d/embedding: not base64 (%s)" % (i, x)
        if len(raw) % 4:
            return ("data/%d/embedding: %d bytes, not float32s"
                    % (i, len(raw)))
        e["embedding"] = list(struct.unpack("<%df" % (len(raw) // 4), raw))
    return None


def check(checker, schema, text, sse, b64):
    try:
        if sse:
            return checker.stream(schema, text, b64)
        return checker.document(schema, text, b64)
    except KeyError as e:
        return str(e.args[0])


def serve(checker):
    for line in sys.stdin:
        try:
            req = json.loads(line)
            why = check(checker, req["schema"], req["body"],
                        req.get("sse"), req.get("base64"))
        except (ValueError, KeyError, TypeError) as e:
            why = "bad request to the checker: %s" % e
        sys.stdout.write("valid\n" if why is None
                         else "invalid: %s\n" % why.replace("\n", " "))
        sys.stdout.flush()


def main(argv):
    flags = {a for a in argv if a.startswith("--")}
    args = [a for a in argv if not a.startswith("--")]
    unknown = flags - {"--sse", "--base64", "--serve", "--missing"}
    if unknown or (not args and not flags & {"--serve", "--missing"}):
        sys.stderr.write(__doc__)
        return 2
    why = missing()
    if "--missing" in flags:
        if why:
            print(why)
        return 1 if why else 0
    if why:
        sys.stderr.write("schema-check: %s\n" % why)
        return 2
    checker = Checker()
    if "--serve" in flags:
        serve(checker)
        return 0
    if len(args) > 1:
        with open(args[1], encoding="utf-8") as f:
            text = f.read()
    else:
        text = sys.stdin.read()
    why = check(checker, args[0], text, "--sse" in flags, "--base64" in flags)
    print("valid" if why is None else "invalid: %s" % why)
    return 0 if why is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
