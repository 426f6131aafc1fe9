"""The layering docs/architecture.md promises, read from the source: no import circle, the core imports no family,
families do not import each other (one named exception), recipes carry no path hacks."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"reportkd": ROOT / "reportkd", "reportkd.text": ROOT / "text", "reportkd.vlm": ROOT / "vlm"}
FAMILIES = ("reportkd.text.mtcnn", "reportkd.text.skd", "reportkd.vlm.clip", "reportkd.vlm.slide")
# the slide family reuses the CLIP family's contrastive loss and open_clip loader instead of copying them
ALLOWED_CROSS_FAMILY = {("reportkd.vlm.slide", "reportkd.vlm.clip")}


def _modules() -> dict[str, Path]:
    modules = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([prefix, *parts])
            if prefix == "reportkd" and parts and parts[0] in ("text", "vlm"):
                continue
            modules[name] = path
    return modules


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _import_time_edges(module: str, tree: ast.Module, *, lazy: bool) -> set[str]:
    """Project modules imported by ``module``: at import time (top level, not under TYPE_CHECKING), or anywhere."""

    def nodes(body):
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            yield node
            if isinstance(node, (ast.If, ast.Try)):
                inner = node.body + node.orelse + getattr(node, "handlers", []) + getattr(node, "finalbody", [])
                yield from nodes(inner)
            elif isinstance(node, ast.ExceptHandler):
                yield from nodes(node.body)

    found = set()
    for node in ast.walk(tree) if lazy else nodes(tree.body):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def _graph(*, lazy: bool) -> dict[str, set[str]]:
    return {m: _import_time_edges(m, ast.parse(p.read_text()), lazy=lazy) for m, p in MODULES.items()}


def _family(module: str) -> str | None:
    return next((f for f in FAMILIES if module == f or module.startswith(f + ".")), None)


def test_modules_found():
    assert {"reportkd.trainer", "reportkd.text.mtcnn.job", "reportkd.vlm.slide.trainer"} <= set(MODULES)


def test_no_import_circle():
    """No module imports (at import time) one that imports it back, except a package's own ``__init__`` re-exports."""
    graph = _graph(lazy=False)
    # a submodule importing its parent package's name space is the normal re-export pattern, not a circle
    graph = {m: {t for t in ts if not (m.startswith(t + ".") and _is_package(t))} for m, ts in graph.items()}
    graph = {m: {t for t in ts if not (t.startswith(m + ".") and _is_package(m))} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("lazy", [False, True], ids=["import-time", "anywhere"])
def test_core_imports_no_family(lazy):
    """The shared core (everything in reportkd/ but the CLI commands) never imports reportkd.text or reportkd.vlm."""
    graph = _graph(lazy=lazy)
    bad = [
        f"{m} -> {t}"
        for m, ts in graph.items()
        if m.startswith("reportkd.")
        and not m.startswith(("reportkd.text", "reportkd.vlm", "reportkd.commands"))
        and m != "reportkd.cli"
        for t in ts
        if t.startswith(("reportkd.text", "reportkd.vlm"))
    ]
    assert not bad, bad


def test_families_do_not_import_each_other():
    bad = []
    for module, targets in _graph(lazy=True).items():
        own = _family(module)
        for target in targets:
            other = _family(target)
            if own and other and other != own and (own, other) not in ALLOWED_CROSS_FAMILY:
                bad.append(f"{module} -> {target}")
    assert not bad, bad


def test_recipes_have_no_path_hacks():
    for path in sorted((ROOT / "recipes").glob("*.py")):
        source = path.read_text()
        assert "sys.path" not in source, path.name
        assert "noqa: E402" not in source, path.name


def test_checker_sees_a_planted_circle(tmp_path, monkeypatch):
    """The circle check can fail: two modules importing each other are reported."""
    a, b = tmp_path / "zz_a.py", tmp_path / "zz_b.py"
    a.write_text("from . import zz_b\n")
    b.write_text("from .zz_a import x\n")
    monkeypatch.setitem(MODULES, "reportkd.zz_a", a)
    monkeypatch.setitem(MODULES, "reportkd.zz_b", b)
    with pytest.raises(AssertionError, match="zz_a"):
        test_no_import_circle()
