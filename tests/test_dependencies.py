"""Every third-party package the service imports is declared, with an exact pin, in pyproject.toml."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Mapping
from importlib.metadata import packages_distributions

from tests.harness import ROOT

PACKAGE = ROOT / "apps" / "zantara_rag"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_level_modules() -> set[str]:
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"zantara_rag", "__future__"}


def pins() -> dict[str, str]:
    out = {}
    for spec in PYPROJECT["project"]["dependencies"]:
        name, _, version = spec.partition("==")
        out[_normal(re.sub(r"\[.*\]", "", name))] = version
    return out


def undeclared(modules: set[str], declared: Mapping[str, str], dists: Mapping[str, list[str]]) -> list[str]:
    """The imported modules whose distribution is not among the declared ones."""
    missing = []
    for module in sorted(modules):
        names = {_normal(d) for d in dists.get(module, [module])}
        if not names & set(declared):
            missing.append(module)
    return missing


def test_every_imported_package_is_a_pinned_dependency() -> None:
    declared = pins()
    assert not undeclared(imported_top_level_modules(), declared, packages_distributions())
    assert all(declared.values()), f"every dependency is pinned exactly (==): {declared}"


def test_the_checker_sees_an_undeclared_import() -> None:
    declared = {k: v for k, v in pins().items() if k != "pystemmer"}
    assert undeclared(imported_top_level_modules(), declared, packages_distributions()) == ["Stemmer"]
