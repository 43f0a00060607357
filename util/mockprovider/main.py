"""Command line and processes: one asyncio loop serving every port, or N forked
workers sharing them through SO_REUSEPORT."""

import argparse
import asyncio
import os
import signal
import socket
import sys
import traceback

from . import core
from .anthropic import AnthropicApp
from .core import log
from .gemini import GeminiApp
from .openai import OpenAIApp
from .server import HttpProtocol

APPS = {"openai": OpenAIApp, "anthropic": AnthropicApp, "gemini": GeminiApp}
PIDFILE_WRITTEN = [False]


def run_worker(args, ports, ready_fd, reuse_port):
    """Serve all ports in this process until SIGTERM/SIGINT."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    defaults = {}
    if args.latency_ms:
        defaults["latency_ms"] = args.latency_ms
    if args.stream_delay_ms:
        defaults["stream_delay_ms"] = args.stream_delay_ms
    servers = []
    for kind, port in ports:
        app = APPS[kind](port, defaults or None)
        srv = loop.run_until_complete(loop.create_server(
            lambda app=app: HttpProtocol(app), args.host, port,
            reuse_port=reuse_port or None, backlog=4096))
        servers.append(srv)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    if ready_fd is None:
        announce(args, ports)
    else:
        os.write(ready_fd, b"R")
        os.close(ready_fd)
    try:
        loop.run_forever()
    finally:
        for srv in servers:
            srv.close()
        tasks = asyncio.all_tasks(loop)
        for t in tasks:
            t.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()
    return 0


def announce(args, ports):
    """All ports listen: write the pidfile, print the ready line."""
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
        PIDFILE_WRITTEN[0] = True
    line = "mock_provider ready %s workers=%d pid=%d" % (
        " ".join("%s=%s:%d" % (k, args.host, p) for k, p in ports), args.workers, os.getpid())
    print(line, flush=True)
    log(line)


def set_pdeathsig():
    """Linux: children get SIGTERM if the parent dies (best effort)."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_multi(args, ports):
    """Fork N workers sharing the ports with SO_REUSEPORT; parent supervises."""
    for kind, port in ports:           # refuse to share a port with a stale listener
        s = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((args.host, port))
        except OSError as e:
            sys.exit("mock_provider: cannot bind %s port %d: %s" % (kind, port, e))
        finally:
            s.close()
    rfd, wfd = os.pipe()
    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            set_pdeathsig()
            code = 1
            try:
                code = run_worker(args, ports, wfd, True)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        children.append(pid)
    os.close(wfd)
    got = 0
    while got < args.workers:
        b = os.read(rfd, 64)
        if not b:
            break
        got += len(b)
    os.close(rfd)
    stopping = [False]

    def stop(*_):
        stopping[0] = True
        for c in children:
            try:
                os.kill(c, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if got < args.workers:
        sys.stderr.write("mock_provider: a worker failed to start\n")
        stop()
    else:
        announce(args, ports)
    rc = 0 if got >= args.workers else 1
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid in children:
            children.remove(pid)
            if not stopping[0]:
                log("worker %d exited unexpectedly (status %d); stopping" % (pid, status))
                rc = 1
                stop()
    return rc


def main():
    ap = argparse.ArgumentParser(
        description="Mock OpenAI/Anthropic/Gemini provider (see util/README.mock.md).")
    ap.add_argument("--openai", type=int, metavar="PORT", help="port speaking OpenAI")
    ap.add_argument("--anthropic", type=int, metavar="PORT", help="port speaking Anthropic")
    ap.add_argument("--gemini", type=int, metavar="PORT", help="port speaking Gemini")
    ap.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    ap.add_argument("--workers", type=int, default=1,
                    help="forked worker processes sharing ports via SO_REUSEPORT (default 1); "
                         "stats/faults are then per worker")
    ap.add_argument("--pidfile", help="write the (parent) pid here; removed on exit")
    ap.add_argument("--log", help="append log lines (ready line, errors) to this file")
    ap.add_argument("--latency-ms", type=int, default=0, help="default latency for every request")
    ap.add_argument("--stream-delay-ms", type=int, default=0,
                    help="default delay between SSE events")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = ap.parse_args()
    ports = [(k, getattr(args, k)) for k in ("openai", "anthropic", "gemini")
             if getattr(args, k) is not None]
    if not ports:
        ap.error("give at least one of --openai/--anthropic/--gemini PORT")
    if args.workers < 1:
        ap.error("--workers must be >= 1")
    if args.log:
        core.LOGFILE = open(args.log, "a", buffering=1)
    core.VERBOSE = args.verbose
    try:
        if args.workers == 1:
            rc = run_worker(args, ports, None, False)
        else:
            rc = run_multi(args, ports)
    except OSError as e:
        sys.stderr.write("mock_provider: %s\n" % e)
        log("startup failed: %s" % e)
        rc = 1
    finally:
        if PIDFILE_WRITTEN[0]:
            try:
                os.unlink(args.pidfile)
            except OSError:
                pass
    log("mock_provider exiting (rc=%d)" % rc)
    return rc

