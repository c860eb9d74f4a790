"""The project's packages and the imports between them, read from the code (ast), as a Mermaid
picture in docs/architecture.md.

    python scripts/depgraph.py          # rewrite the picture between the depgraph markers
    python scripts/depgraph.py --check  # exit 1 if the picture is not the code's

tests/test_layering.py runs ``--check`` and checks the import rules on the same reading.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
START, END = "<!-- depgraph:start -->", "<!-- depgraph:end -->"
TOP_PACKAGES = ("bmap", "parsers", "reports")

#: The nodes of the picture: a module belongs to the longest of these that prefixes its name.
NODES = (
    "parsers",
    "reports",
    "bmap",
    "bmap.errors",
    "bmap.images",
    "bmap.model",
    "bmap.layers",
    "bmap.store",
    "bmap.trace",
    "bmap.fleet",
    "bmap.cli",
)
LABELS = {
    "parsers": "parsers<br/>one module per on-disk format",
    "reports": "reports<br/>DataFrames in, files out",
    "bmap": "bmap<br/>the public API",
    "bmap.errors": "bmap.errors<br/>errors, exit codes, findings",
    "bmap.images": "bmap.images<br/>images read-only, stream views",
    "bmap.model": "bmap.model<br/>the block map as columns",
    "bmap.layers": "bmap.layers<br/>tables, LVM, filesystems, the mapper",
    "bmap.store": "bmap.store<br/>map files, index, lookup",
    "bmap.trace": "bmap.trace<br/>logs, annotation, serve",
    "bmap.fleet": "bmap.fleet<br/>many images on Dask",
    "bmap.cli": "bmap.cli<br/>commands, rendering, process set-up",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    """Every module of the three packages, by its dotted name."""
    return {
        module_name(path): path
        for package in TOP_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """``(imported module, line)`` for every import in a module, wherever it stands (inside
    functions and ``if TYPE_CHECKING:`` too); relative imports resolved. ``from bmap import
    __version__`` is left out: the version string is no dependency on the public API."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.module == "bmap" and [a.name for a in node.names] == ["__version__"]:
                continue
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, node.lineno
            # ``from bmap.model import textcols`` imports the module bmap.model.textcols.
            for alias in node.names:
                yield f"{base}.{alias.name}", node.lineno


def node_of(module: str) -> str | None:
    """The node a module belongs to (None: not the project's). ``python -m bmap`` is the
    program: it goes with the CLI."""
    if module == "bmap.__main__":
        return "bmap.cli"
    best = None
    for node in NODES:
        if (module == node or module.startswith(node + ".")) and (
            best is None or len(node) > len(best)
        ):
            best = node
    return best


def edges() -> set[tuple[str, str]]:
    found = set()
    known = project_modules()
    for name, path in known.items():
        source = node_of(name)
        for target_module, _ in imports(path):
            if target_module not in known:
                continue  # a name imported from a module, or not the project's
            target = node_of(target_module)
            if source and target and source != target:
                found.add((source, target))
    return found


def mermaid() -> str:
    lines = ["```mermaid", "flowchart TD"]
    for node in NODES:
        lines.append(f'    {node.replace(".", "_")}["{LABELS[node]}"]')
    for source, target in sorted(edges()):
        lines.append(f"    {source.replace('.', '_')} --> {target.replace('.', '_')}")
    lines.append("```")
    return "\n".join(lines)


def rewritten(text: str) -> str:
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{DOC}: no {START} marker")
    return f"{head}{START}\n{mermaid()}\n{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    args = parser.parse_args()
    text = DOC.read_text()
    new = rewritten(text)
    if args.check:
        if new != text:
            print(
                f"{DOC.relative_to(ROOT)}: the package picture is not the code's; run "
                "python scripts/depgraph.py",
                file=sys.stderr,
            )
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
