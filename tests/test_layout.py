"""The package's shape: wings whose imports run one way, no cycles, small modules, no two sharing a name.

Every `import` in every module counts, wherever it stands (a function body, `if TYPE_CHECKING:`): an arrow
hidden in a function is still an arrow.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

from tests.harness import ROOT

PACKAGE = ROOT / "apps" / "zantara_rag"
MAX_LINES = 400

# Lower numbers sit lower: a module may import its own wing, and any wing of a strictly lower layer.
LAYERS: dict[str, int] = {
    "settings": 0,
    "errors": 0,
    "events": 0,
    "domain": 0,
    "language": 0,
    "logs": 0,
    "metrics": 0,
    "retrieval": 1,
    "generation": 1,
    "knowledge": 2,
    "streaming": 2,
    "conversations": 2,
    "services": 3,
    "http": 4,
    "app": 5,
    "server": 6,
    "cli": 7,
}
# Within the bottom layer, the modules import one another in this order only (a lower index is lower).
BOTTOM = ["errors", "settings", "events", "language", "domain", "metrics", "logs"]


def modules() -> dict[str, Path]:
    """Dotted name below the package (`http.auth`) → file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path) -> set[str]:
    """The package modules `name` imports (dotted, below the package), resolved from relative imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]
    known = modules()
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                prefix = ".".join([*base, *(node.module.split(".") if node.module else [])])
            elif node.module and node.module.startswith("zantara_rag"):
                prefix = node.module.removeprefix("zantara_rag").lstrip(".")
            else:
                continue
            for alias in node.names:
                candidate = f"{prefix}.{alias.name}" if prefix else alias.name
                targets.append(candidate if candidate in known else prefix)
        elif isinstance(node, ast.Import):
            targets = [
                a.name.removeprefix("zantara_rag").lstrip(".")
                for a in node.names
                if a.name.startswith("zantara_rag.")
            ]
        found.update(t for t in targets if t and t in known and t != name)
    return found


def wing(module: str) -> str:
    return module.split(".")[0]


def test_every_module_belongs_to_a_known_wing() -> None:
    assert {wing(m) for m in modules()} <= set(LAYERS), "a new wing needs a place in LAYERS"


def allowed(a: str, b: str) -> bool:
    """May wing `a` import wing `b`?"""
    if a == b:
        return True
    if LAYERS[a] == LAYERS[b] == 0:
        return BOTTOM.index(b) < BOTTOM.index(a)
    return LAYERS[b] < LAYERS[a]


def test_imports_only_run_downwards() -> None:
    upward = [
        f"{name} -> {target}"
        for name, path in modules().items()
        for target in imports(name, path)
        if not allowed(wing(name), wing(target))
    ]
    assert not upward, "imports that run upward or sideways:\n" + "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    graph = {name: imports(name, path) for name, path in modules().items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a relative import from the bottom layer into a wing is found and resolved."""
    probe = PACKAGE / "events.py"
    assert "errors" in imports("events", probe)
    fake = tmp_path / "domain.py"
    fake.write_text("from .streaming.stream import Stream\nfrom .http import auth\n")
    assert imports("domain", fake) == {"streaming.stream", "http.auth"}
    assert not allowed("domain", "streaming") and not allowed("retrieval", "generation")
    assert not allowed("errors", "events") and allowed("events", "errors") and allowed("http", "services")


def test_modules_are_small_and_uniquely_named() -> None:
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in modules().items()}
    assert not {n: s for n, s in sizes.items() if s > MAX_LINES}, f"modules over {MAX_LINES} lines"
    leaves = Counter(name.split(".")[-1] for name, path in modules().items() if path.name != "__init__.py")
    assert not [n for n, c in leaves.items() if c > 1], "two modules share a name"


def test_every_wing_says_what_lives_there() -> None:
    for path in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc, f"{path.parent.name}/ has no module docstring"
