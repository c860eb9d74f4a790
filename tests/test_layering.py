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


def test_public_api_names_all_resolve():
    """``bmap``'s names are imported on first use; each must still be there."""
    import bmap

    assert set(bmap.__all__) == set(bmap._PUBLIC) | {"__version__"}
    for name in bmap.__all__:
        assert getattr(bmap, name) is not None, name
    with pytest.raises(AttributeError):
        bmap.no_such_name  # noqa: B018


def test_map_of_a_plain_filesystem_imports_no_lvm_or_tables(tmp_path):
    """Start-up is most of a small map's time: ``bmap map`` of an image without LVM imports
    neither the LVM mapper nor pandas nor the index (a fresh interpreter, so nothing an earlier
    test imported counts)."""
    import lzma
    import subprocess
    import sys

    image = tmp_path / "disk.img"
    image.write_bytes(lzma.decompress((ROOT / "samples" / "whole-disk-ext4.img.xz").read_bytes()))
    probe = (
        "import sys\n"
        "from bmap.cli import main\n"
        "try:\n"
        f"    main(['map', {str(image)!r}, '-o', {str(tmp_path / 'out.bmap')!r}])\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True
    )
    loaded = set(done.stdout.split())
    assert "bmap.extmap" in loaded  # the probe did map the filesystem
    assert (tmp_path / "out.bmap").stat().st_size > 0
    for module in ("bmap.lvm", "parsers.lvm2", "pandas", "bmap.index", "bmap.trace"):
        assert module not in loaded, module
