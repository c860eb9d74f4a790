"""Imports run one way: parsers and reports are leaves; bmap uses both (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"parsers": {"bmap", "reports"}, "reports": {"bmap", "parsers"}, "bmap": set()}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    for path in files:
        bad = imported_packages(path) & FORBIDDEN[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_no_print_in_library_code():
    for package in ("parsers", "bmap", "reports"):
        for path in (ROOT / package).rglob("*.py"):
            if path.name in ("cli.py", "__main__.py"):
                continue
            tree = ast.parse(path.read_text())
            calls = [
                n
                for n in ast.walk(tree)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
            ]
            assert not calls, f"print() in {path.relative_to(ROOT)}"


def test_evidence_structs_are_never_compiled():
    """construct's compiled form drops checks; every image here may be hostile."""
    construct_compile = re.compile(r"\.compile\(\s*(filename\s*=[^)]*)?\)")
    for path in (ROOT / "parsers").rglob("*.py"):
        assert not construct_compile.search(path.read_text()), path
