"""The deterministic answer: a pure function of the conversation, whatever its format.

Each format module turns its request into a Conversation (system texts and
(role, text) lines, where tool calls, tool results and images have one textual
form for every format) and its tools into (name, schema) pairs; everything
below is shared, so the same conversation gets the same answer on every port.
"""

import base64
import binascii
import hashlib
import math
import re

from .core import BadRequest, jcanon

FILLER = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
          "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
          "exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure "
          "in reprehenderit voluptate velit esse cillum eu fugiat nulla pariatur excepteur "
          "sint occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim "
          "id est laborum").split()
DEFAULT_WORDS = 30
MAX_LONG = 1_000_000
LONG_RE = re.compile(r"LONG:(\d+)")
WEATHER_RE = re.compile(r"\bweather\b", re.I)
CALL_TOOL_RE = re.compile(r"\bcall tool ([A-Za-z0-9_.:-]+)")
WEATHER_ARGS = {"location": "Paris"}
TOOL_TOKENS = 3                        # completion tokens reported for a tool call
ARG_CUT_RE = re.compile(r"[^:,]*[:,]|[^:,]+$")


class Conversation:
    """Format-independent view of a request: system texts + (role, text) messages.

    role is "user", "assistant" or "tool" (a tool result)."""
    __slots__ = ("system", "msgs")

    def __init__(self):
        self.system = []
        self.msgs = []

    def canonical(self):
        parts = []
        sys_text = "\n".join(self.system)
        if sys_text:
            parts.append("system:" + sys_text)
        parts.extend("%s:%s" % m for m in self.msgs)
        return "\n".join(parts)

    def last_user(self):
        """The text answered: the last user message, or a tool result after it."""
        for role, text in reversed(self.msgs):
            if role in ("user", "tool"):
                return text
        return ""

    def after_tool(self):
        return bool(self.msgs) and self.msgs[-1][0] == "tool"


# one textual form per tool call, tool result and image, in any format

def call_text(name, args):
    return "[call %s %s]" % (name, args if isinstance(args, str) else jcanon(args))


def result_text(name, text):
    return "[result %s] %s" % (name or "tool", text)


def image_inline(mime, data):
    """Inline (base64) image: its type and the hash of its bytes."""
    if not isinstance(data, str) or not isinstance(mime, str) or not mime:
        raise BadRequest("an inline image needs a media type and base64 data")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("image data is not valid base64") from None
    return "[image %s %s]" % (mime, hashlib.sha256(raw).hexdigest()[:8])


def image_url(url):
    """An image by URL: data: URLs are inline images, http(s) URLs stay URLs."""
    if not isinstance(url, str):
        raise BadRequest("image url must be a string")
    if url.startswith("data:"):
        meta, sep, data = url[5:].partition(",")
        if not sep or not meta.endswith(";base64"):
            raise BadRequest("Invalid image URL: a data URL must be base64")
        return image_inline(meta[:-7], data)
    if url.startswith(("http://", "https://")):
        return "[image %s]" % url
    raise BadRequest("Invalid image URL: expected an http(s) or base64 data URL")


def args_json(args):
    """Tool call arguments as the wire string: compact JSON, sorted keys."""
    return jcanon(args)


def arg_pieces(s):
    """Stream pieces of an arguments string: cut after every ':' and ','."""
    return ARG_CUT_RE.findall(s) or [s]


def prompt_tokens(canon):
    return max(1, math.ceil(len(canon) / 4))


def gen_pieces(canon, last_user, variant=0):
    """Deterministic answer for a conversation, as word pieces ("w0", " w1", ...)."""
    seed = canon if not variant else "%s\x00choice%d" % (canon, variant)
    h8 = hashlib.sha256(seed.encode("utf-8", "replace")).hexdigest()[:8]
    words = ("Mock answer %s to: %s" % (h8, last_user[:200])).split()
    m = LONG_RE.search(last_user)
    target = min(int(m.group(1)), MAX_LONG) if m else DEFAULT_WORDS
    if len(words) < target:
        off, nf = int(h8, 16), len(FILLER)
        words.extend(FILLER[(off + i) % nf] for i in range(target - len(words)))
    elif m:
        del words[target:]
    if not words:
        return []
    return [words[0]] + [" " + w for w in words[1:]]


def limit(pieces, max_tokens, stops):
    """Apply max_tokens and stop sequences -> (pieces, reason, matched_stop).

    reason is "stop" (natural end), "length" (max tokens) or "stop_sequence"."""
    reason, seq = "stop", None
    if max_tokens is not None and max_tokens < len(pieces):
        pieces, reason = pieces[:max_tokens], "length"
    if stops:
        text = "".join(pieces)
        best = None
        for s in stops:
            if s:
                i = text.find(s)
                if i >= 0 and (best is None or i < best[0]):
                    best = (i, s)
        if best is not None:
            cut, out, pos = best[0], [], 0
            for p in pieces:
                if pos + len(p) <= cut:
                    out.append(p)
                    pos += len(p)
                else:
                    if cut > pos:
                        out.append(p[:cut - pos])
                    break
            pieces, reason, seq = out, "stop_sequence", best[1]
    return pieces, reason, seq


# ---------------------------------------------------------------- tool calls

def _h(seed):
    return int(hashlib.sha256(seed.encode("utf-8", "replace")).hexdigest()[:8], 16)


def derive_value(schema, key, seed, depth=0):
    """A value fitting a JSON schema (any case of type names), from the seed."""
    if not isinstance(schema, dict):
        schema = {}
    h = _h(seed)
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[h % len(enum)]
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if isinstance(x, str) and x.lower() != "null"), None)
    t = t.lower() if isinstance(t, str) else ("object" if "properties" in schema
                                              else "string")
    if t == "object":
        props = schema.get("properties")
        if depth >= 4 or not isinstance(props, dict):
            return {}
        return {k: derive_value(props[k], k, seed + "/" + k, depth + 1)
                for k in sorted(props)}
    if t == "array":
        items = schema.get("items")
        if depth >= 4 or not isinstance(items, dict):
            return []
        return [derive_value(items, key, seed + "/0", depth + 1)]
    if t == "integer":
        return h % 100
    if t == "number":
        return (h % 10000) / 100
    if t == "boolean":
        return bool(h & 1)
    if t == "null":
        return None
    return "%s-%08x" % (key, h)


def choose_tool(conv, tools, forced):
    """The tool call this conversation gets, or None.

    tools: [(name, schema)] as declared; forced: None (auto), "none", "any"
    (some tool must be called) or a tool name.  Returns (name, args object)."""
    if not tools or forced == "none":
        return None
    names = [t[0] for t in tools]
    last = "" if conv.after_tool() else conv.last_user()
    named = forced if forced not in (None, "any") else None
    if WEATHER_RE.search(last):
        return named or names[0], dict(WEATHER_ARGS)
    m = CALL_TOOL_RE.search(last)
    asked = m.group(1) if m and m.group(1) in names else None
    if named is not None:
        name = named
    elif asked is not None:
        name = asked
    elif forced == "any":
        name = names[0]
    else:
        return None
    schema = tools[names.index(name)][1] if name in names else None
    args = derive_value(schema if isinstance(schema, dict) else {"type": "object"},
                        "value", "%s\x00%s" % (conv.canonical(), name))
    if not isinstance(args, dict):
        args = {}
    return name, args
