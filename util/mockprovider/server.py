"""The HTTP layer shared by every format: an asyncio protocol with a minimal
HTTP/1.1 parser (keep-alive, pipelining, chunked bodies, 100-continue) and the
writers for plain, streamed and deliberately split replies."""

import asyncio
import socket
import time
from urllib.parse import unquote

from .core import MAX_BODY, MAX_HEADER, REASONS, fill, http_date, log, new_id


class Request:
    __slots__ = ("method", "target", "path", "query", "http11", "headers", "body",
                 "keep_alive", "chunked", "clen", "expect", "mock")

    @classmethod
    def from_head(cls, head):
        """Parse request line + headers (bytes without the final CRLFCRLF)."""
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise ValueError("malformed request line")
        method, target, version = parts
        if version == b"HTTP/1.1":
            http11 = True
        elif version == b"HTTP/1.0":
            http11 = False
        else:
            raise ValueError("unsupported HTTP version")
        r = cls()
        r.method = method.decode("latin-1")
        target = target.decode("latin-1")
        if target.startswith(("http://", "https://")):      # absolute-form
            i = target.find("/", target.find("//") + 2)
            target = target[i:] if i >= 0 else "/"
        r.target = target
        path, _, r.query = target.partition("?")
        r.path = unquote(path) if "%" in path else path
        r.http11 = http11
        headers, mock = {}, False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
                raise ValueError("malformed header line")
            k = name.lower().decode("latin-1")
            v = value.strip().decode("latin-1")
            if k in headers:
                headers[k] += ", " + v
            else:
                headers[k] = v
            if k.startswith("x-mock-"):
                mock = True
        r.headers, r.mock = headers, mock
        conn = headers.get("connection", "").lower()
        r.keep_alive = ("close" not in conn) if http11 else ("keep-alive" in conn)
        te = headers.get("transfer-encoding")
        r.chunked = te is not None and "chunked" in te.lower()
        r.clen = 0
        if not r.chunked and "content-length" in headers:
            cl = headers["content-length"]
            if not cl.isdigit():
                raise ValueError("bad content-length")
            r.clen = int(cl)
            if r.clen > MAX_BODY:
                raise ValueError("body too large")
        r.expect = http11 and headers.get("expect", "").lower() == "100-continue"
        r.body = bytearray() if r.chunked else b""
        return r


class HttpProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 server connection: keep-alive, pipelining, chunked bodies."""

    def __init__(self, app):
        self.app = app
        self.transport = None
        self.buf = bytearray()
        self.req = None            # request whose body is being read
        self.chunk_left = -1       # chunked body state: -1 size line, -2 trailers, >0 data
        self.busy = False          # an async (faulty/streaming) response is in progress
        self.closed = False
        self.task = None
        self.paused = False
        self.drain_waiter = None

    # ---- asyncio callbacks
    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.closed = True
        if self.task is not None:
            self.task.cancel()
        self._wake()

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self._wake()

    def _wake(self):
        w = self.drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def drain(self):
        while self.paused and not self.closed:
            self.drain_waiter = asyncio.get_running_loop().create_future()
            await self.drain_waiter

    def data_received(self, data):
        self.buf += data
        if not self.busy:
            self.process()

    # ---- request parsing
    def process(self):
        while not self.busy and not self.closed:
            try:
                req = self.parse()
            except ValueError as e:
                msg = str(e)
                status = (431 if "header too large" in msg else
                          413 if "too large" in msg else 400)
                self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                                     % (status, REASONS[status].encode(), len(msg),
                                        msg.encode()))
                self.close()
                return
            if req is None:
                return
            self.app.handle(self, req)

    def parse(self):
        buf = self.buf
        req = self.req
        if req is None:
            while buf[:2] == b"\r\n":                   # tolerate stray CRLFs between requests
                del buf[:2]
            idx = buf.find(b"\r\n\r\n")
            if idx < 0:
                if len(buf) > MAX_HEADER:
                    raise ValueError("request header too large")
                return None
            req = Request.from_head(bytes(buf[:idx]))
            del buf[:idx + 4]
            self.req = req
            self.chunk_left = -1
        if req.chunked:
            done = self.read_chunked(req)
        elif len(buf) >= req.clen:
            if req.clen:
                req.body = bytes(buf[:req.clen])
                del buf[:req.clen]
            done = True
        else:
            done = False
        if not done:
            if req.expect:
                req.expect = False
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None
        self.req = None
        return req

    def read_chunked(self, req):
        buf = self.buf
        while True:
            left = self.chunk_left
            if left < 0:
                i = buf.find(b"\r\n")
                if i < 0:
                    if len(buf) > 4096:
                        raise ValueError("bad chunk size line")
                    return False
                line = bytes(buf[:i])
                del buf[:i + 2]
                if left == -2:                          # trailer section
                    if i == 0:
                        req.body = bytes(req.body)
                        return True
                    continue
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ValueError("bad chunk size") from None
                if len(req.body) + size > MAX_BODY:
                    raise ValueError("body too large")
                self.chunk_left = size if size > 0 else -2
            else:
                if len(buf) < left + 2:
                    return False
                if buf[left:left + 2] != b"\r\n":
                    raise ValueError("bad chunk terminator")
                req.body += buf[:left]
                del buf[:left + 2]
                self.chunk_left = -1

    # ---- responses
    def close(self):
        self.closed = True
        self.buf.clear()
        self.transport.close()

    def start(self, coro):
        """Run an async response; further pipelined requests wait for it."""
        self.busy = True
        self.task = asyncio.get_running_loop().create_task(coro)
        self.task.add_done_callback(self._task_done)

    def _task_done(self, t):
        self.task = None
        self.busy = False
        if not t.cancelled() and t.exception() is not None:
            log("response task failed: %r" % (t.exception(),))
            self.close()
        if not self.closed and self.buf:
            self.process()

    def _conn_header(self, req, ka):
        if not ka:
            return "Connection: close\r\n"
        return "" if req.http11 else "Connection: keep-alive\r\n"

    def send(self, req, status, body, ctype="application/json", extra="", partial=False):
        ka = req.keep_alive and not partial
        head = ("HTTP/1.1 %d %s\r\nServer: mock_provider\r\nDate: %s\r\nContent-Type: %s\r\n"
                "Content-Length: %d\r\n%s%s\r\n"
                % (status, REASONS.get(status, "Unknown"), http_date(), ctype,
                   len(body), extra, self._conn_header(req, ka)))
        if partial:                                     # drop=mid: half the body, then close
            self.transport.write(head.encode("latin-1") + body[:len(body) // 2])
            self.close()
            return
        self.transport.write(head.encode("latin-1") + body)
        if not ka:
            self.close()

    def send_reply(self, req, reply):
        self.send(req, reply.status, fill(reply.body, new_id(), b"%d" % int(time.time())),
                  reply.ctype, reply.extra)

    def _stream_head(self, req, reply):
        chunked = req.http11
        ka = req.keep_alive and chunked
        return ("HTTP/1.1 200 OK\r\nServer: mock_provider\r\nDate: %s\r\nContent-Type: %s\r\n"
                "Cache-Control: no-cache\r\n%s%s\r\n"
                % (http_date(), reply.ctype,
                   "Transfer-Encoding: chunked\r\n" if chunked else "",
                   self._conn_header(req, ka))).encode("latin-1"), chunked, ka

    def send_stream_now(self, req, reply):
        """Stream without delays: all frames in one write (still one chunk per event)."""
        head, chunked, ka = self._stream_head(req, reply)
        ident, created = new_id(), b"%d" % int(time.time())
        out = [head]
        for fr in reply.frames:
            fr = fill(fr, ident, created)
            if chunked:
                out.append(b"%x\r\n%s\r\n" % (len(fr), fr))
            else:
                out.append(fr)
        if chunked:
            out.append(b"0\r\n\r\n")
        self.transport.write(b"".join(out))
        if not ka:
            self.close()

    async def send_stream(self, req, reply, delay_ms, err_after, drop_mid, truncated,
                          split=0, comments=0, cutter=None):
        """Stream frame by frame with optional delay, in-stream error, drop or truncation;
        split: every write (and HTTP chunk) at most that many bytes; comments: an SSE
        comment line before each event; cutter: the TCP sends themselves cut (Cutter)."""
        head, chunked, ka = self._stream_head(req, reply)
        tw = self.transport.write
        tw(head)
        out = []                        # wire bytes and event offsets, for the cutter

        def write1(b):
            if cutter is None:
                tw(b"%x\r\n%s\r\n" % (len(b), b) if chunked else b)
            elif chunked:
                hdr = b"%x\r\n" % len(b)
                out.append((hdr + b + b"\r\n", len(hdr), len(b)))
            else:
                out.append((b, 0, len(b)))

        def write(b):
            if comments:
                b = b": keep-alive" + reply.sep + b
            if not split:
                write1(b)
                return
            for k in range(0, len(b), split):
                write1(b[k:k + split])

        async def flush():
            for wire, start, n in out:
                if not await cutter.put(self, wire, start, n):
                    return False
            out.clear()
            return True

        ident, created = new_id(), b"%d" % int(time.time())
        frames = reply.frames
        half = max(1, len(frames) // 2)
        delay = delay_ms / 1000.0
        for i, fr in enumerate(frames):
            if i and delay:
                await asyncio.sleep(delay)
            if self.closed:
                return
            if err_after is not None and i >= err_after:
                write(reply.error_frames[0 if i == 0 else 1])
                break
            if drop_mid and i >= half:
                break
            fr = fill(fr, ident, created)
            if truncated and i == half:
                write(fr[:len(fr) // 2] + reply.sep)
                break
            write(fr)
            if out and not await flush():
                return
            if self.paused:
                await self.drain()
        if out and not await flush():
            return
        if self.closed:
            return
        if drop_mid:
            self.close()
            return
        if chunked:
            if cutter is None:
                tw(b"0\r\n\r\n")
            elif not await cutter.put(self, b"0\r\n\r\n", None, 0):
                return
        if not ka:
            self.close()

    async def send_cut(self, req, status, body, ctype, extra, partial, cutter):
        """A plain reply whose body goes out in the cutter's TCP sends."""
        ka = req.keep_alive and not partial
        self.transport.write(
            ("HTTP/1.1 %d %s\r\nServer: mock_provider\r\nDate: %s\r\nContent-Type: %s\r\n"
             "Content-Length: %d\r\n%s%s\r\n"
             % (status, REASONS.get(status, "Unknown"), http_date(), ctype,
                len(body), extra, self._conn_header(req, ka))).encode("latin-1"))
        if partial:
            body = body[:len(body) // 2]
        if not await cutter.put(self, body, 0, len(body)):
            return
        if not ka:
            self.close()


class Cutter:
    """Cuts what a reply writes into separate TCP sends, so that the client reads
    frames in pieces: every `size` bytes (1: every byte alone) and/or once per
    event at byte `at` of the event (negative: from its end), with `gap_ms`
    between sends (default: only a turn of the event loop between `size`
    pieces, 1 ms after an `at` cut, so that the client reads before the rest)."""
    __slots__ = ("size", "at", "gap")

    def __init__(self, size, at, gap_ms):
        if gap_ms is None:
            gap_ms = 0 if size else 1
        self.size, self.at, self.gap = size or 0, at, gap_ms / 1000.0

    def cuts(self, wire, start, n):
        """Offsets in wire where a send ends; start/n: the event inside wire."""
        pts = set()
        if self.at is not None and start is not None:
            k = self.at if self.at >= 0 else n + self.at
            pts.add(start + min(max(k, 0), n))
        if self.size:
            pts.update(range(self.size, len(wire), self.size))
        return sorted(p for p in pts if 0 < p < len(wire)) + [len(wire)]

    async def put(self, proto, wire, start, n):
        """Send wire in pieces; False if the client left meanwhile."""
        sock = proto.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        pos = 0
        for end in self.cuts(wire, start, n):
            if proto.closed:
                return False
            proto.transport.write(wire[pos:end])
            pos = end
            await asyncio.sleep(self.gap)
            if proto.paused:
                await proto.drain()
        return not proto.closed
