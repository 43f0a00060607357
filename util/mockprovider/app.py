"""What every port shares whatever its format: faults, stats, the control API
(/_mock/...), the reply cache and dispatch.  A format module subclasses
ProviderApp with its routes, its error shape and its request checks."""

import asyncio
import collections
import json
import os
import re
import time
import traceback

from . import core
from .core import (MODELS, BadRequest, fill, is_int, json_reply, log, malformed_reply,
                   new_id)
from .server import Cutter

CACHE_MAX = 4096                       # reply cache: max entries,
CACHE_BYTES = 64 << 20                 # max total bytes,
CACHE_ENTRY_MAX = 1 << 20              # max bytes of one entry (request + reply)

# knobs in the request body, for callers that cannot set X-Mock-* headers
# per request (a gateway batch): the same fields as the headers
BODY_KNOB_RE = re.compile(rb"MOCK_(LATENCY_MS|STATUS):(\d+)")

FAULT_INT_KEYS = ("latency_ms", "stream_delay_ms", "status", "stream_error", "count",
                  "stream_split", "stream_comments", "tcp_split", "tcp_gap_ms")
FAULT_SIGNED_KEYS = ("tcp_split_at",)
MALFORMED_KINDS = ("html", "truncated", "garbage", "empty")
DROP_KINDS = ("before", "mid")
HEADER_KNOBS = (("x-mock-latency-ms", "latency_ms", int),
                ("x-mock-stream-delay-ms", "stream_delay_ms", int),
                ("x-mock-status", "status", int),
                ("x-mock-malformed", "malformed", str),
                ("x-mock-drop", "drop", str),
                ("x-mock-stream-error", "stream_error", int),
                ("x-mock-stream-split", "stream_split", int),
                ("x-mock-stream-comments", "stream_comments", int),
                ("x-mock-tcp-split", "tcp_split", int),
                ("x-mock-tcp-split-at", "tcp_split_at", int),
                ("x-mock-tcp-gap-ms", "tcp_gap_ms", int))


class ProviderApp:
    """State and routes of one listening port (one provider format)."""

    kind = None

    def __init__(self, port, defaults):
        self.port = port
        self.models = MODELS[self.kind]
        self.defaults = defaults            # CLI latency/stream delay, or None
        self.faults = []                    # queued control faults (dicts)
        self.cache = {}                     # (method, target, body) -> Reply
        self.cache_bytes = 0                # approximate memory held by the cache
        self.reset_stats()
        self.routes = self.route_table()

    # ---------------------------------------------------------------- format hooks

    def route_table(self):
        """{(method, path): handler(req, data, arg)}"""
        raise NotImplementedError

    def route_more(self, req):
        """Routes with parameters: (handler, arg) or (None, None)."""
        return None, None

    @staticmethod
    def error_obj(status, message, etype=None, code=None):
        raise NotImplementedError

    def json_error(self, e):
        raise NotImplementedError

    def not_found(self, req):
        raise NotImplementedError

    def auth(self, req):
        return None

    def model_404(self, model, what=None):
        raise NotImplementedError

    def fault_etype(self, status):
        return None

    # ---------------------------------------------------------------- common helpers

    def error(self, status, message, etype=None, code=None, extra=""):
        return json_reply(status, self.error_obj(status, message, etype, code), extra)

    def valid_model(self, model):
        return isinstance(model, str) and (model in self.models or model.startswith("mock-"))

    def parse_json(self, req):
        try:
            data = json.loads(req.body)
        except ValueError as e:
            return None, self.error(400, self.json_error(e))
        if not isinstance(data, dict):
            return None, self.error(400, "request body must be a JSON object")
        return data, None

    def sse_reply(self, frames, ctype="text/event-stream", sep=b"\n\n", err=None):
        if err is None:
            err = b"data: " + core.jdump(self.error_obj(500, "mock_provider injected "
                                                        "stream error")) + sep
            err = (err, err)
        return core.Reply(200, frames=frames, ctype=ctype, error_frames=err, sep=sep)

    # ---------------------------------------------------------------- stats

    def dissent(self, last_user):
        """MOCK_DISSENT:<provider> in the text: that provider answers another text."""
        return 1 if ("MOCK_DISSENT:" + self.kind) in last_user else 0

    def reset_stats(self):
        self.counts = {}
        self.total = 0
        self.recent = collections.deque(maxlen=50)
        self.inflight = getattr(self, "inflight", 0)
        self.peak_inflight = self.inflight
        self.aborted = 0

    def record(self, key, req):
        self.counts[key] = self.counts.get(key, 0) + 1
        self.total += 1
        self.recent.append(req)

    @staticmethod
    def describe(req):
        body = req.body
        try:
            parsed = json.loads(body) if body else ""
        except ValueError:
            parsed = body.decode("utf-8", "replace")
        return {"method": req.method, "path": req.path, "query": req.query,
                "headers": req.headers, "body": parsed}

    def stats(self):
        return {"provider": self.kind, "port": self.port, "pid": os.getpid(),
                "requests": self.counts, "total": self.total,
                "inflight": self.inflight, "peak_inflight": self.peak_inflight,
                "aborted": self.aborted,
                "last_request": self.describe(self.recent[-1]) if self.recent else None,
                "recent": [self.describe(r) for r in self.recent]}

    # ---------------------------------------------------------------- control API

    def control(self, req):
        p, m = req.path, req.method
        if p == "/_mock/health":
            return json_reply(200, {"status": "ok", "provider": self.kind, "port": self.port})
        if p == "/_mock/stats" and m == "GET":
            return json_reply(200, self.stats())
        if p == "/_mock/reset" and m == "POST":
            self.faults.clear()
            self.reset_stats()
            return json_reply(200, {"status": "ok"})
        if p == "/_mock/faults":
            if m == "DELETE":
                self.faults.clear()
                return json_reply(200, {"status": "ok", "faults": []})
            if m == "POST":
                try:
                    specs = json.loads(req.body)
                    if isinstance(specs, dict):
                        specs = [specs]
                    if not isinstance(specs, list):
                        raise ValueError("body must be a fault object or an array of them")
                    self.faults.extend(self.check_fault(s) for s in specs)
                except ValueError as e:
                    return json_reply(400, {"status": "error", "message": str(e)})
                return json_reply(200, {"status": "ok", "faults": self.faults})
            if m == "GET":
                return json_reply(200, {"faults": self.faults})
        return json_reply(404, {"status": "error", "message": "unknown control route"})

    @staticmethod
    def check_fault(spec):
        if not isinstance(spec, dict):
            raise ValueError("fault must be a JSON object")
        out = {}
        for k, v in spec.items():
            if v is None:
                continue
            if k in FAULT_INT_KEYS:
                if not is_int(v) or v < 0:
                    raise ValueError("%s must be a non-negative integer" % k)
            elif k in FAULT_SIGNED_KEYS:
                if not is_int(v):
                    raise ValueError("%s must be an integer" % k)
            elif k == "malformed":
                if v not in MALFORMED_KINDS:
                    raise ValueError("malformed must be one of %s" % (MALFORMED_KINDS,))
            elif k == "drop":
                if v not in DROP_KINDS:
                    raise ValueError("drop must be one of %s" % (DROP_KINDS,))
            elif k == "route":
                if not isinstance(v, str):
                    raise ValueError("route must be a string")
            else:
                raise ValueError("unknown fault field %r" % k)
            out[k] = v
        if out.get("count") == 0:
            raise ValueError("count must be >= 1 (omit it for 'until cleared')")
        return out

    def pick_fault(self, key, req):
        """Effective fault for a request: CLI defaults < control queue < X-Mock-* headers."""
        f = None
        if self.faults:
            for i, q in enumerate(self.faults):
                r = q.get("route")
                if r is None or r in key or r in req.target:
                    f = dict(q)
                    if "count" in q:
                        q["count"] -= 1
                        if q["count"] <= 0:
                            del self.faults[i]
                    break
        if req.mock:
            f = dict(f) if f else {}
            h = req.headers
            for hname, fname, conv in HEADER_KNOBS:
                v = h.get(hname)
                if v is not None:
                    try:
                        f[fname] = conv(v.strip().lower())
                    except ValueError:
                        pass
        if req.body and b"MOCK_" in req.body:
            for m in BODY_KNOB_RE.finditer(req.body):
                f = dict(f) if f else {}
                f[m.group(1).decode().lower()] = int(m.group(2))
        if self.defaults:
            f = dict(self.defaults, **f) if f else dict(self.defaults)
        return f

    # ---------------------------------------------------------------- dispatch

    def handle(self, proto, req):
        """Entry point for every parsed request (called from the protocol)."""
        if req.path.startswith("/_mock/"):
            proto.send_reply(req, self.control(req))
            return
        key = req.method + " " + req.path
        self.record(key, req)
        if core.VERBOSE:
            log("%s %s %s" % (self.kind, req.method, req.target))
        fault = self.pick_fault(key, req)
        if not fault:
            reply = self.get_reply(req)
            if reply.frames is None:
                proto.send_reply(req, reply)
            else:
                proto.send_stream_now(req, reply)
            self.peak_inflight = max(self.peak_inflight, self.inflight + 1)
            return
        self.inflight += 1
        self.peak_inflight = max(self.peak_inflight, self.inflight)
        proto.start(self.run_counted(proto, req, fault))

    async def run_counted(self, proto, req, f):
        """A delayed or faulty reply, counted while in flight."""
        try:
            await self.run_faulty(proto, req, f)
        except asyncio.CancelledError:
            self.aborted += 1           # the client closed the connection
            raise
        finally:
            self.inflight -= 1

    def get_reply(self, req):
        handler, arg = self.route(req)
        if handler is None:
            return self.not_found(req)
        err = self.auth(req)
        if err is not None:
            return err
        ck = (req.method, req.target, req.body)
        reply = self.cache.get(ck)
        if reply is None:
            try:
                if req.method == "POST":
                    data, reply = self.parse_json(req)
                    if reply is None:
                        reply = handler(req, data, arg)
                else:
                    reply = handler(req, None, arg)
            except BadRequest as e:
                reply = self.error(400, str(e))
            except Exception:
                log("internal error: " + traceback.format_exc())
                reply = self.error(500, "mock_provider internal error")
            size = len(req.body) + len(reply.body)
            if reply.frames is not None:
                size += sum(map(len, reply.frames))
            if size <= CACHE_ENTRY_MAX:
                if len(self.cache) >= CACHE_MAX or self.cache_bytes + size > CACHE_BYTES:
                    self.cache.clear()
                    self.cache_bytes = 0
                self.cache[ck] = reply
                self.cache_bytes += size
        return reply

    def route(self, req):
        h = self.routes.get((req.method, req.path))
        if h is not None:
            return h, None
        return self.route_more(req)


    def fault_status_reply(self, status):
        extra = "retry-after: 1\r\n" if status == 429 else ""
        return self.error(status, "mock_provider injected error (status %d)" % status,
                          etype=self.fault_etype(status), extra=extra)

    async def run_faulty(self, proto, req, f):
        lat = f.get("latency_ms")
        if lat:
            await asyncio.sleep(lat / 1000.0)
        if proto.closed:
            return
        drop, mal, status = f.get("drop"), f.get("malformed"), f.get("status")
        if drop == "before":
            proto.close()
            return
        if status and status != 200:
            reply = self.fault_status_reply(status)
        elif mal in ("html", "garbage", "empty"):
            reply = malformed_reply(mal)
        else:
            reply = self.get_reply(req)
        cutter = None
        if f.get("tcp_split") or f.get("tcp_split_at") is not None:
            cutter = Cutter(f.get("tcp_split"), f.get("tcp_split_at"), f.get("tcp_gap_ms"))
        if reply.frames is None:
            body = fill(reply.body, new_id(), b"%d" % int(time.time()))
            if mal == "truncated":
                body = body[:len(body) // 2]
            if cutter is not None:
                await proto.send_cut(req, reply.status, body, reply.ctype, reply.extra,
                                     drop == "mid", cutter)
            elif drop == "mid":
                proto.send(req, reply.status, body, reply.ctype, reply.extra,
                           partial=True)
            else:
                proto.send(req, reply.status, body, reply.ctype, reply.extra)
            return
        await proto.send_stream(req, reply, f.get("stream_delay_ms") or 0,
                                f.get("stream_error"), drop == "mid", mal == "truncated",
                                f.get("stream_split") or 0, f.get("stream_comments") or 0,
                                cutter)

