#!/usr/bin/env python3
"""Time to the first SSE frame, the gateway next to plain proxy_pass of the
same mock stream, interleaved in one run.

  util/stream-ttfb.py --port 2984 [-n 300] [--delay-ms 0] GW_PATH GW_BODY PLAIN_PATH PLAIN_BODY

Each request is a fresh HTTP/1.1 connection to 127.0.0.1:PORT; the clock
runs from the request's first byte to the first byte of the first frame
("data:" or "event:" after the headers) and, with --delay-ms, the gaps
between frames are reported too.  Prints p50/p90/p99 in microseconds."""

import argparse, socket, time


def one(port, path, body, headers=""):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           "Content-Length: %d\r\nConnection: close\r\n%s\r\n" % (path, len(body), headers)
           ).encode() + body.encode()
    t0 = time.perf_counter()
    s.sendall(req)
    buf, first, marks, seen = b"", None, [], 0
    while True:
        d = s.recv(65536)
        if not d:
            break
        now = time.perf_counter()
        buf += d
        head = buf.find(b"\r\n\r\n")
        if head < 0:
            continue
        n = buf.count(b"data:", head) + buf.count(b"event:", head)
        if n > seen:
            if first is None:
                first = now - t0
            marks.append(now)
            seen = n
    s.close()
    if first is None:
        raise SystemExit("no frame from %s: %r" % (path, buf[:300]))
    gaps = [b - a for a, b in zip(marks, marks[1:])]
    return first, gaps


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-n", type=int, default=300)
    ap.add_argument("--plain-headers", default="")
    ap.add_argument("targets", nargs=4)
    a = ap.parse_args()
    gw, plain = (a.targets[0], a.targets[1]), (a.targets[2], a.targets[3])
    res = {"gateway": [], "proxy_pass": []}
    gaps = {"gateway": [], "proxy_pass": []}
    for _ in range(20):
        one(a.port, *gw)
        one(a.port, *plain, headers=a.plain_headers)
    for _ in range(a.n):
        f, g = one(a.port, *gw)
        res["gateway"].append(f)
        gaps["gateway"] += g
        f, g = one(a.port, *plain, headers=a.plain_headers)
        res["proxy_pass"].append(f)
        gaps["proxy_pass"] += g
    for k in ("proxy_pass", "gateway"):
        v = res[k]
        print("%-10s first frame p50 %6.0f us  p90 %6.0f us  p99 %6.0f us"
              % (k, pct(v, 50) * 1e6, pct(v, 90) * 1e6, pct(v, 99) * 1e6))
    for k in ("proxy_pass", "gateway"):
        v = gaps[k]
        if v:
            print("%-10s between frames p50 %6.0f us  max %6.0f us"
                  % (k, pct(v, 50) * 1e6, max(v) * 1e6))
    d = [g - p for g, p in zip(res["gateway"], res["proxy_pass"])]
    print("gateway - proxy_pass, paired: p50 %+.0f us" % (pct(d, 50) * 1e6))


if __name__ == "__main__":
    main()
