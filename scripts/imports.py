#!/usr/bin/env python3
"""Lists each Rust file's imports of its own crate and fails on an import loop.

    scripts/imports.py [--list] [CRATE_DIR ...]     (default: every crate of the workspace)

For every file under CRATE_DIR/src, the `crate::`, `super::` and `self::` paths it
names (in `use` lines and inline) are resolved to the file that defines that
module. The files of a crate must import each other one way only: the script
prints every loop (a strongly connected set of files, with the names that tie
them) and exits 1 if there is one. `--list` also prints each file's imports.
A `mod x;` declaration is not an import (a parent declares its children).
"""
import os
import re
import sys

PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+|::\{)")
USE_GROUP = re.compile(r"\buse\s+(crate|super|self)::((?:[A-Za-z_][A-Za-z0-9_]*::)*)\{([^;]*)\};", re.S)


def module_of(src, path):
    """The module path (list of names) of a file under src."""
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("lib", "main", "mod"):
        rel = rel[:-1]
    return rel


def file_of(src, modules, names):
    """The file defining the longest prefix of `names` that is a module."""
    for n in range(len(names), -1, -1):
        key = tuple(names[:n])
        if key in modules:
            return modules[key]
    return None


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def expand_groups(body, prefix):
    """Paths named by a `use prefix::{a, b::c, d::{e, f}}` group."""
    out, depth, cur = [], 0, ""
    for ch in body + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            item = cur.strip()
            cur = ""
            if not item:
                continue
            m = re.match(r"([A-Za-z0-9_:]*?)::\{(.*)\}$", item, re.S)
            if m:
                out += expand_groups(m.group(2), prefix + m.group(1).split("::"))
            else:
                name = item.split(" as ")[0].strip()
                out.append(prefix + [p for p in name.split("::") if p])
        else:
            cur += ch
    return out


def crate_edges(src):
    files = []
    for root, dirs, names in os.walk(src):
        dirs[:] = [d for d in dirs if d not in ("target",)]
        files += [os.path.join(root, n) for n in names if n.endswith(".rs")]
    modules = {tuple(module_of(src, f)): f for f in files}
    edges = {}
    for f in sorted(files):
        here = module_of(src, f)
        text = strip(open(f, encoding="utf-8").read())
        paths = []
        for m in USE_GROUP.finditer(text):
            base = [m.group(1)] + [p for p in m.group(2).split("::") if p]
            paths += expand_groups(m.group(3), base)
        text = USE_GROUP.sub("", text)
        for m in PATH.finditer(text):
            paths.append([m.group(1)] + [p for p in m.group(2).split("::") if p and p != "{"])
        for p in paths:
            head, rest = p[0], p[1:]
            if head == "crate":
                names = rest
            else:
                # self:: is this module; super:: its parent (a file's module is its own path).
                base = list(here)
                if head == "super":
                    base = base[:-1]
                while rest and rest[0] == "super":
                    base, rest = base[:-1], rest[1:]
                names = base + rest
            target = file_of(src, modules, names)
            if target and target != f:
                edges.setdefault(f, {}).setdefault(target, set()).add(names[-1] if names else "crate")
    return files, edges


def loops(files, edges):
    """Strongly connected sets of more than one file (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(files):
        if v not in index:
            visit(v)
    return out


def main(argv):
    listing = "--list" in argv
    dirs = [a for a in argv if not a.startswith("--")]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not dirs:
        dirs = [root] + [os.path.join(root, d) for d in ("cli", "server", "clients", "forward", "compare", "workload", "fuzz")]
    failed = False
    for d in dirs:
        src = os.path.join(d, "src")
        if not os.path.isdir(src):
            continue
        files, edges = crate_edges(src)
        name = os.path.relpath(d, root) if d != root else "annal"
        if listing:
            for f in sorted(files):
                deps = edges.get(f, {})
                print(f"{os.path.relpath(f, root)}: " + ", ".join(sorted(os.path.relpath(t, src) for t in deps)))
        found = loops(files, edges)
        for comp in found:
            failed = True
            print(f"import loop in {name}: " + " <-> ".join(os.path.relpath(f, root) for f in comp))
            for a in comp:
                for b, names in sorted(edges.get(a, {}).items()):
                    if b in comp:
                        print(f"    {os.path.relpath(a, root)} -> {os.path.relpath(b, root)}: {', '.join(sorted(names))}")
        if not found:
            print(f"{name}: {len(files)} files, no import loop")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
