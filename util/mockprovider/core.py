"""Shared constants and helpers: JSON, ids, dates, replies, request checks."""

import functools
import hashlib
import itertools
import json
import math
import os
import sys
import time
from array import array
from http import HTTPStatus

MODELS = {
    "openai": ["gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "text-embedding-3-large"],
    "anthropic": ["claude-3-5-sonnet-20241022", "claude-3-haiku-20240307"],
    "gemini": ["gemini-1.5-pro", "gemini-1.5-flash", "text-embedding-004"],
}
EMBED_DIMS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072,
              "text-embedding-004": 768}
DEFAULT_EMBED_DIMS = {"openai": 1536, "gemini": 768}

# placeholders substituted per response so that replies can be cached as bytes
ID_PH = "@@MOCKID@@"
CREATED_PH = "@@CREATED@@"
ID_PH_B = ID_PH.encode()
CREATED_PH_B = b'"' + CREATED_PH.encode() + b'"'
MARK = "\x00P\x00"                     # piece marker for per-frame templates
MARK_B = b'"\\u0000P\\u0000"'

MAX_HEADER = 64 * 1024
MAX_BODY = 64 * 1024 * 1024

REASONS = {s.value: s.phrase for s in HTTPStatus}
REASONS[529] = "Overloaded"

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_canon_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False,
                                  sort_keys=True)
LOGFILE = None
VERBOSE = False


def jdump(obj):
    """Compact JSON as UTF-8 bytes (like the real APIs)."""
    return _encoder.encode(obj).encode("utf-8", "replace")


def jcanon(obj):
    """Compact JSON with sorted keys, as str: the same value in any format."""
    return _canon_encoder.encode(obj)


def log(msg):
    if LOGFILE is not None:
        LOGFILE.write("%s [%d] %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), os.getpid(), msg))
        LOGFILE.flush()


_id_counter = itertools.count(1)
_id_base = os.urandom(4).hex()


def new_id():
    """Random-ish unique id (per process random base + counter), 24 hex chars."""
    return ("%s%016x" % (_id_base, next(_id_counter))).encode()


_date_cache = [0, ""]


def http_date():
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0] = now
        _date_cache[1] = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
    return _date_cache[1]


def fill(b, ident, created):
    """Substitute the id/created placeholders of a cached reply."""
    return b.replace(ID_PH_B, ident).replace(CREATED_PH_B, created)


def template(obj):
    """Split jdump(obj) around MARK so that a frame is pre + jdump(piece) + post."""
    pre, post = jdump(obj).split(MARK_B)
    return pre, post


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


class BadRequest(Exception):
    """Request body is syntactically JSON but semantically invalid (-> 400)."""


def opt_max_tokens(v, name):
    if v is None:
        return None
    if not is_int(v) or v < 1:
        raise BadRequest("%s must be an integer >= 1" % name)
    return v


def str_list(v, name):
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return v
    raise BadRequest("%s must be a string or an array of strings" % name)


@functools.lru_cache(maxsize=8192)
def embed_vector(text, dims):
    """Deterministic unit vector from the text (shake_256 stream), 6 decimals."""
    raw = hashlib.shake_256(text.encode("utf-8", "replace")).digest(dims * 2)
    a = array("H")
    a.frombytes(raw)
    if sys.byteorder != "little":
        a.byteswap()
    vals = [x - 32767.5 for x in a]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return tuple(round(v / norm, 6) for v in vals)


class Reply:
    """A complete answer: either a body (non-stream) or a list of SSE frames.

    Bodies/frames may contain ID/CREATED placeholders (see fill()).  error_frames is
    (at_start, later) for the in-stream error event; sep terminates a cut frame."""
    __slots__ = ("status", "ctype", "body", "frames", "error_frames", "sep", "extra")

    def __init__(self, status=200, body=b"", ctype="application/json", frames=None,
                 error_frames=None, sep=b"\n\n", extra=""):
        self.status, self.body, self.ctype = status, body, ctype
        self.frames, self.error_frames, self.sep, self.extra = frames, error_frames, sep, extra


def json_reply(status, obj, extra=""):
    return Reply(status, jdump(obj), extra=extra)


HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
             b"<body><center><h1>502 Bad Gateway</h1></center><hr>"
             b"<center>mock_provider (malformed=html)</center></body></html>\n")


def malformed_reply(kind):
    if kind == "html":
        return Reply(200, HTML_PAGE, ctype="text/html; charset=utf-8")
    if kind == "garbage":
        return Reply(200, os.urandom(256))
    return Reply(200, b"")                                   # empty
