"""Every third-party import of reportkd/, text/ and vlm/ is a declared dependency (read from the source, by AST).

An import at module level (outside ``try: … except ImportError``) runs whenever the module is imported, so its
distribution must be a core dependency; an import inside a function or guarded by ``except ImportError`` may come from
an extra (``wsi``, ``export``, …) instead. Module → distribution goes through
``importlib.metadata.packages_distributions()``; imports of packages that are not on PyPI are listed in
``NOT_ON_PYPI`` with the reason.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("reportkd", "text", "vlm")
LIBRARY_EXTRAS_EXCLUDED = ("test", "bench")  # tools for the repository, not for the library's own imports
# top-level module → why it is not a declared dependency
NOT_ON_PYPI = {"conch": "CONCH's package installs from git; conch_v1 imports it lazily and says how to install it"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(spec: str) -> str:
    return _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec).group(1))


def declared(pyproject: Path = ROOT / "pyproject.toml") -> tuple[set[str], set[str]]:
    """(core, extras) distribution names declared in ``pyproject.toml`` (normalised; self-references dropped)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    core = {_requirement_name(s) for s in project.get("dependencies", [])}
    extras = {
        _requirement_name(s)
        for extra, specs in project.get("optional-dependencies", {}).items()
        if extra not in LIBRARY_EXTRAS_EXCLUDED
        for s in specs
    }
    return core, extras - {_norm(project["name"])}


def _guards_import_error(node: ast.Try) -> bool:
    names = []
    for handler in node.handlers:
        t = handler.type
        names += [e.id for e in (t.elts if isinstance(t, ast.Tuple) else [t]) if isinstance(e, ast.Name)]
    return bool({"ImportError", "ModuleNotFoundError", "Exception"} & set(names))


def third_party_imports(path: Path) -> list[tuple[str, bool, int]]:
    """``(top-level module, optional, line)`` for every absolute import of ``path``: optional when inside a function
    or a ``try`` that catches ``ImportError``."""
    out: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, optional: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = optional or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Try) and _guards_import_error(child):
                for part in child.body:
                    visit(ast.Module(body=[part], type_ignores=[]), True)
                for part in [*child.handlers, *child.orelse, *child.finalbody]:
                    visit(part if not isinstance(part, ast.stmt) else ast.Module([part], []), inner)
                continue
            if isinstance(child, ast.Import):
                out.extend((a.name.split(".")[0], inner, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                out.append((child.module.split(".")[0], inner, child.lineno))
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return [(m, opt, line) for m, opt, line in out if m not in sys.stdlib_module_names and m != "reportkd"]


def undeclared(files: list[Path], core: set[str], extras: set[str]) -> list[str]:
    """One message per import whose distribution is not declared where it must be."""
    dists = importlib.metadata.packages_distributions()
    problems = []
    for path in files:
        for module, optional, line in third_party_imports(path):
            if module in NOT_ON_PYPI:
                continue
            names = {_norm(d) for d in dists.get(module, [])}
            where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line}"
            if not names:
                problems.append(f"{where}: import {module}: no installed distribution provides it")
            elif optional and not names & (core | extras):
                problems.append(f"{where}: import {module} ({'/'.join(sorted(names))}) is in no dependency or extra")
            elif not optional and not names & core:
                problems.append(
                    f"{where}: top-level import {module} ({'/'.join(sorted(names))}) is not a core dependency"
                )
    return problems


def _sources() -> list[Path]:
    return sorted(p for folder in SOURCES for p in (ROOT / folder).rglob("*.py"))


def test_every_third_party_import_is_declared_in_pyproject():
    core, extras = declared()
    files = _sources()
    assert len(files) > 100
    assert undeclared(files, core, extras) == []


def test_the_check_catches_undeclared_and_misplaced_imports(tmp_path):
    module = tmp_path / "planted.py"
    module.write_text(
        "import numpy\nfrom PIL import Image\n\n\ndef f():\n    import h5py\n\n\ntry:\n    import timm\n"
        "except ImportError:\n    timm = None\n"
    )
    found = third_party_imports(module)
    assert [(m, opt) for m, opt, _ in found] == [("numpy", False), ("PIL", False), ("h5py", True), ("timm", True)]
    problems = undeclared([module], core={"numpy"}, extras={"h5py"})
    assert len(problems) == 2
    assert "top-level import PIL (pillow) is not a core dependency" in problems[0]
    assert "import timm (timm) is in no dependency or extra" in problems[1]
    # an optional import from an extra is fine; a top-level one is not
    assert undeclared([module], core={"numpy", "pillow", "timm"}, extras={"h5py"}) == []
    assert undeclared([module], core={"pillow", "timm"}, extras={"h5py", "numpy"})[0].endswith(
        "top-level import numpy (numpy) is not a core dependency"
    )
