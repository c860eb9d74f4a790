"""List every file's data runs with dissect.extfs, the same walk as walk_pytsk3.py.

    python bench/walk_dissect.py IMAGE

Opens IMAGE with ``ExtFS(fh)``, walks the tree from the root with ``iterdir()`` (``.`` and
``..`` skipped, each directory inode entered once) and calls ``inode.dataruns()`` on every
regular file, directory and slow symlink (a fast symlink keeps its target in the inode and
has no runs; dissect would misread its inode as block pointers), collecting each run's
``(block, count)``; sparse runs (block None) are counted as runs with no blocks. Exceptions
are counted per file and the walk goes on. The last line of stdout gives the counts.

dissect.extfs is AGPL-3.0: only this benchmark script imports it, in its own process.
"""

from __future__ import annotations

import stat
import sys
import time

from dissect.extfs import ExtFS


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    fh = open(argv[1], "rb")  # noqa: SIM115 - open for the whole walk
    fs = ExtFS(fh)
    runs: list[tuple[int | None, int]] = []
    files = dirs = others = errors = 0
    blocks = 0
    first_errors: list[str] = []

    def error(path: str, exc: BaseException) -> None:
        nonlocal errors
        errors += 1
        if len(first_errors) < 5:
            first_errors.append(f"{path}: {type(exc).__name__}: {exc}")

    root = fs.root
    seen = {root.inum}
    stack = [("", root)]
    while stack:
        parent, directory = stack.pop()
        try:
            children = directory.iterdir()
            for node in children:
                name = node.filename
                if name in (".", ".."):
                    continue
                path = parent + "/" + name
                try:
                    kind = node.filetype
                    if kind == stat.S_IFDIR:
                        dirs += 1
                    elif kind == stat.S_IFREG:
                        files += 1
                    else:
                        others += 1
                    if kind in (stat.S_IFDIR, stat.S_IFREG) or (
                        kind == stat.S_IFLNK and node.size >= 60
                    ):
                        for block, count in node.dataruns():
                            runs.append((block, count))
                            if block is not None:
                                blocks += count
                    if kind == stat.S_IFDIR and node.inum not in seen:
                        seen.add(node.inum)
                        stack.append((path, node))
                except Exception as exc:
                    error(path, exc)
        except Exception as exc:  # the directory itself could not be read
            error(parent or "/", exc)
    for line in first_errors:
        print(f"walk_dissect: error: {line}", file=sys.stderr)
    print(
        f"dissect files={files} dirs={dirs} others={others} runs={len(runs)} "
        f"blocks={blocks} errors={errors} seconds={time.perf_counter() - t0:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
