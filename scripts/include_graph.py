#!/usr/bin/env python3
"""The folder-level include graph of moe-lfb, and a check that it has no cycle
(docs/architecture.md, "Layout").

Every #include "..." under src/, kernels/, data_tools/ and emu/ is resolved
the way the compiler finds it (the including file's folder first, then the
include roots src/, the repository root, kernels/, emu/include/) and becomes
an edge between the two files' folders. Folders are src/<name> (src/backend/cpu
and src/backend/cuda count as src/backend), kernels, data_tools and emu/<name>.
Includes of files outside those trees (<...>, CUDA, system) are not edges.

  scripts/include_graph.py [--root DIR] [--dot]

Prints the graph (one line per folder: the folders it includes), or Graphviz
with --dot. Exit 0 when the graph has no cycle; 1 naming a cycle (one for each
group of folders that include each other), with an include that makes each of
its edges; 2 on bad input.
"""
import argparse
import pathlib
import re
import sys

SCANNED = ("src", "kernels", "data_tools", "emu")
INCLUDE_ROOTS = ("src", ".", "kernels", "emu/include")
SOURCE_SUFFIXES = {".h", ".cuh", ".cpp", ".cu", ".hpp", ".cc"}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def folder_of(rel):
    """The graph node of a repository-relative path: src/<name>, kernels, data_tools, emu/<name>."""
    parts = rel.parts
    if parts[0] in ("src", "emu") and len(parts) > 2:
        return f"{parts[0]}/{parts[1]}"
    return parts[0]


def resolve(root, including, name):
    """The file `#include "name"` in `including` reads, relative to root; None when outside the tree."""
    for base in [including.parent] + [root / r for r in INCLUDE_ROOTS]:
        candidate = (base / name).resolve()
        if candidate.is_file():
            try:
                rel = candidate.relative_to(root)
            except ValueError:
                return None
            return rel if rel.parts[0] in SCANNED else None
    return None


def build_graph(root):
    """{folder: {included folder: (file, included file)}}: one include that makes each edge."""
    graph = {}
    for top in SCANNED:
        for path in sorted((root / top).rglob("*")):
            if path.suffix not in SOURCE_SUFFIXES or not path.is_file():
                continue
            rel = path.relative_to(root)
            src = folder_of(rel)
            edges = graph.setdefault(src, {})
            for name in INCLUDE.findall(path.read_text(errors="replace")):
                target = resolve(root, path, name)
                if target is None:
                    continue
                dst = folder_of(target)
                if dst != src:
                    edges.setdefault(dst, (str(rel), str(target)))
    return graph


def strongly_connected(graph):
    """The graph's strongly connected components of more than one folder (Tarjan)."""
    index, low, on_stack, stack, comps = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            comp = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                comp.append(top)
                if top == node:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return comps


def cycle_in(graph, comp):
    """A shortest cycle through comp's first folder, within comp: [a, b, ..., a]."""
    start, members = comp[0], set(comp)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph.get(node, {})):
                if nxt == start:
                    return paths[node] + [start]
                if nxt in members and nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError("a strongly connected component without a cycle")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=pathlib.Path(__file__).resolve().parent.parent,
                    type=pathlib.Path, help="the repository (default: this script's)")
    ap.add_argument("--dot", action="store_true", help="print Graphviz instead of text")
    args = ap.parse_args()
    root = args.root.resolve()
    if not all((root / top).is_dir() for top in ("src", "kernels")):
        print(f"include_graph: {root} is not a moe-lfb checkout (no src/ and kernels/)", file=sys.stderr)
        return 2

    graph = build_graph(root)
    if args.dot:
        print("digraph includes {\n  rankdir=TB;")
        for src in sorted(graph):
            print(f'  "{src}";')
            for dst in sorted(graph[src]):
                print(f'  "{src}" -> "{dst}";')
        print("}")
    else:
        for src in sorted(graph):
            print(f"{src} -> {', '.join(sorted(graph[src])) or '(nothing)'}")

    comps = strongly_connected(graph)
    for comp in comps:  # one cycle for each knot of folders that include each other
        cycle = cycle_in(graph, comp)
        print(f"include_graph: cycle: {' -> '.join(cycle)}", file=sys.stderr)
        for a, b in zip(cycle, cycle[1:]):
            f, t = graph[a][b]
            print(f"  {a} -> {b}: {f} includes {t}", file=sys.stderr)
    return 1 if comps else 0


if __name__ == "__main__":
    sys.exit(main())
