"""The import arrows docs/architecture.md states, checked on the source: which package
may import which, and the import circles inside packages (none, except those the
document still lists under "Not yet", which this test names so that a new one fails
and a removed one is crossed off)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("segments", "raft", "node", "client")

# What each package may import of the project (module prefixes); docs/architecture.md.
ALLOWED = {
    "segments": {"segments"},
    "raft": {"raft"},
    "client": {"client", "segments.batch", "segments.compression", "segments.errors"},
    "node": {
        "node",
        "raft",
        "segments",
        "client.protocol",
        "client.errors",
        "client.partitioner",
        "client.conventions",
        "client.cluster",
        "client.scram",
        "client.acls",
        "client.quotas",
        "client.rawsocket",
    },
}

# The one node module a script may import: the production storage as the simulator's disk.
SIMULATED_STORAGE = "node.simstorage"

# The circles still open, as sets of modules (none: keep it that way).
KNOWN_CIRCLES: set[frozenset[str]] = set()


def modules() -> dict[str, Path]:
    out = {}
    for pkg in (*PACKAGES, "scripts"):
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


def imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports (top-level, inside functions and TYPE_CHECKING alike)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


def project(target: str) -> bool:
    return target.split(".")[0] in (*PACKAGES, "scripts")


def test_packages_import_only_what_the_map_allows():
    wrong = []
    for name, path in modules().items():
        pkg = name.split(".")[0]
        for target in imports(name, path):
            if not project(target):
                if pkg == "raft" and target.split(".")[0] in ("trio", "anyio"):
                    wrong.append(f"{name} imports {target}: raft/ is sans-I/O")
                continue
            if pkg == "scripts":
                # Scripts start nodes as processes; the simulator's runner alone builds
                # the node's storage on a simulated disk.
                if target.split(".")[0] == "node" and not (
                    name == "scripts.simulate" and target.startswith(SIMULATED_STORAGE)
                ):
                    wrong.append(f"{name} imports {target}: scripts start nodes as processes")
                continue
            if not any(target == a or target.startswith(a + ".") for a in ALLOWED[pkg]):
                # `from client.protocol import X` also names `client.protocol.X`: judged by its module
                if not any(target.rsplit(".", 1)[0] == a for a in ALLOWED[pkg]):
                    wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def circles() -> set[frozenset[str]]:
    mods = {n: p for n, p in modules().items() if n.split(".")[0] in PACKAGES}
    edges = {
        m: {t for t in imports(m, p) if t in mods and t != m and not m.startswith(t + ".")} for m, p in mods.items()
    }
    # strongly connected components (iterative Tarjan)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: set[frozenset[str]] = set()
    counter = 0
    for root in mods:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = set()
                while True:
                    x = stack.pop()
                    on.discard(x)
                    comp.add(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    found.add(frozenset(comp))
    return found


def test_no_import_circle_beyond_the_ones_still_listed():
    found = circles()
    new = [sorted(c) for c in found - KNOWN_CIRCLES]
    gone = [sorted(c) for c in KNOWN_CIRCLES - found]
    assert not new, f"new import circles: {new}"
    assert not gone, f"circles no longer there: cross them off here and in docs/architecture.md: {gone}"
