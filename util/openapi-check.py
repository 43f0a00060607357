#!/usr/bin/env python3
"""openapi-check.py - validate Responses answers against OpenAI's schema.

  util/openapi-check.py OPENAPI_YAML FILE...

Each FILE is one answer body: a Response object (checked against
components/schemas/Response) or a Responses stream ("event: ..." frames,
each data checked against ResponseStreamEvent).  The description is
OpenAPI 3.1 with "nullable: true", read here as "or null".  Prints one
line per invalid document, then "valid N invalid M"; exit 1 if any is
invalid.  Needs python3-jsonschema (Debian's 4.10 will do) and
python3-yaml.
"""

import json
import sys

import yaml
from jsonschema import Draft202012Validator


def nullable(x):
    if isinstance(x, list):
        return [nullable(v) for v in x]
    if not isinstance(x, dict):
        return x
    x = {k: nullable(v) for k, v in x.items()}
    if x.pop("nullable", False):
        if "type" in x:
            t = x["type"]
            x["type"] = (t if isinstance(t, list) else [t]) + ["null"]
        if "enum" in x:
            x["enum"] = x["enum"] + [None]
        if "type" not in x and "enum" not in x:
            x = {"anyOf": [x, {"type": "null"}]}
    return x


def main():
    with open(sys.argv[1]) as f:
        schemas = nullable(yaml.safe_load(f)["components"]["schemas"])

    # the root holds the components, so that "#/components/..." resolves
    # without a resolver or a registry (their APIs differ across versions)
    def validator(name):
        return Draft202012Validator({"$ref": "#/components/schemas/" + name,
                                     "components": {"schemas": schemas}})

    response, event = validator("Response"), validator("ResponseStreamEvent")
    ok = bad = 0
    for path in sys.argv[2:]:
        with open(path) as f:
            body = f.read()
        docs = []
        if body.startswith("event:"):
            for frame in body.split("\n\n"):
                if frame.strip():
                    docs.append((event, frame.split("data: ", 1)[1]))
        else:
            docs.append((response, body))
        for v, text in docs:
            try:
                doc = json.loads(text)
            except ValueError:
                bad += 1
                print(path, "not JSON:", text[:100])
                continue
            errs = list(v.iter_errors(doc))
            if errs:
                bad += 1
                e = min(errs, key=lambda e: len(list(e.path)))
                print(path, doc.get("type", doc.get("object")),
                      e.message[:200], list(e.path))
            else:
                ok += 1
    print("valid", ok, "invalid", bad)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
