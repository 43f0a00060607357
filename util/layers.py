#!/usr/bin/env python3
"""layers.py - check that src/ keeps to its layers ("make test" runs it).

src/<layer>/ folders, lowest first: core, clients, formats, policy, api
(the order "config" gives).  A file may use its own layer and those below
it, never one above, and no two files may use each other, directly or
through others.  "Use" is an #include of one of our headers, or a
reference to a function or variable another .c file defines (found in
the code with comments and strings taken out), so that a prototype in a
low header cannot hide an upward call.  The nginx module objects that
ngx_http_helix_module.c defines are the one exception: every file asks
them for its configuration and request context, as in nginx itself.

  util/layers.py            check; exit 1 and say where, on a breach
  util/layers.py --graph    print who uses whom, by file
"""

import collections
import os
import re
import sys

LAYERS = ["core", "clients", "formats", "policy", "api"]
TOP = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
MODULE = "ngx_http_helix_module.c"


def strip(code):
    """code without comments, string and character literals"""
    out = re.sub(r"/\*.*?\*/", " ", code, flags=re.S)
    out = re.sub(r"//[^\n]*", " ", out)
    out = re.sub(r'"(\\.|[^"\\\n])*"', '""', out)
    out = re.sub(r"'(\\.|[^'\\\n])*'", "''", out)
    return out


def files():
    found = {}
    for layer in LAYERS:
        d = os.path.join(TOP, "src", layer)
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            if name.endswith((".c", ".h")):
                found[name] = layer
    return found


def main():
    where = files()
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    text = {}
    for name, layer in where.items():
        with open(os.path.join(TOP, "src", layer, name)) as f:
            text[name] = f.read()
    with open(os.path.join(TOP, MODULE)) as f:
        text[MODULE] = f.read()
    where[MODULE] = "module"
    rank["module"] = len(LAYERS)

    bad = []

    # what each .c defines: functions and variables not static
    defs = {}
    for name, code in text.items():
        if not name.endswith(".c"):
            continue
        code = strip(code)
        for m in re.finditer(r"^(\w[\w \t\*]*?)\b(ngx_http_helix_\w+)\s*(\(|=|;|\[)",
                             code, re.M):
            decl, sym = m.group(1), m.group(2)
            if "static" in decl or "extern" in decl or "typedef" in decl:
                continue
            defs.setdefault(sym, name)
        for m in re.finditer(r"^(ngx_http_helix_\w+)\(", code, re.M):
            line_start = code.rfind("\n", 0, code.rfind("\n", 0, m.start()))
            prev = code[line_start + 1:m.start()]
            if "static" in prev:
                continue
            defs.setdefault(m.group(1), name)

    uses = collections.defaultdict(set)

    for name, code in text.items():
        for m in re.finditer(r'^\s*#\s*include\s+"([^"]+)"', code, re.M):
            inc = os.path.basename(m.group(1))
            if inc not in where:
                continue
            if rank[where[inc]] > rank[where[name]]:
                bad.append("%s/%s includes %s/%s, a layer above"
                           % (where[name], name, where[inc], inc))
            src = name[:-2] + ".c"
            dst = inc[:-2] + ".c"
            if dst in text and dst != src and name.endswith(".c"):
                uses[src].add(dst)

        if not name.endswith(".c"):
            continue
        for m in re.finditer(r"\bngx_http_helix_\w+\b", strip(code)):
            owner = defs.get(m.group(0))
            if owner is None or owner == name:
                continue
            if owner == MODULE and m.group(0).endswith("_module"):
                # the module object itself: every file of a module asks
                # it for its configuration and context (core declares it)
                continue
            uses[name].add(owner)
            if rank[where[owner]] > rank[where[name]]:
                bad.append("%s/%s uses %s of %s/%s, a layer above"
                           % (where[name], name, m.group(0), where[owner],
                              owner))

    if "--graph" in sys.argv:
        for name in sorted(uses):
            print("%s/%s -> %s" % (where[name], name,
                                   " ".join(sorted(uses[name]))))

    # cycles: strongly connected components of more than one file
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in uses.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(text):
        if v.endswith(".c") and v not in index:
            visit(v)

    for comp in comps:
        edges = ["%s -> %s" % (a, b) for a in comp for b in sorted(uses[a])
                 if b in comp]
        bad.append("a cycle: %s" % "; ".join(edges))

    for line in sorted(set(bad)):
        print("layers: " + line.replace("ngx_http_helix_", ""))

    if bad:
        return 1

    print("layers: %d files in %d layers, no upward use, no cycle"
          % (len([n for n in text if n.endswith(".c")]), len(LAYERS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
