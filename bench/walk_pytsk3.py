"""List every file's data runs with pytsk3: the script a forensic analyst would write.

    python bench/walk_pytsk3.py IMAGE

Opens IMAGE with ``Img_Info`` / ``FS_Info``, walks the tree from ``/`` with ``open_dir``
(``.`` and ``..`` skipped, each directory inode entered once), and for every entry iterates
``for attr in f: for run in attr:``, collecting each run's ``(addr, len)``. TSK's virtual
``/$OrphanFiles`` directory is not entered (listing it scans every unallocated inode for
orphans, which is not what is compared). Sparse and filler runs are listed but their
blocks not counted. Besides the data, TSK lists the blocks of a file's extent tree (an
attribute of type ``UNIX_EXTENT``), which dissect.extfs does not. TSK raises on some
entries; those are counted per file and the walk goes on. The last line of stdout gives the
counts, so the work cannot be optimised away and the walkers can be compared.
"""

from __future__ import annotations

import sys
import time

import pytsk3

#: Runs with these flags hold no blocks of the image (holes, the unwritten tail).
_NOT_ON_DISK = pytsk3.TSK_FS_ATTR_RUN_FLAG_SPARSE | pytsk3.TSK_FS_ATTR_RUN_FLAG_FILLER


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    img = pytsk3.Img_Info(argv[1])
    fs = pytsk3.FS_Info(img)
    runs: list[tuple[int, int]] = []
    files = dirs = others = errors = 0
    blocks = 0
    first_errors: list[str] = []

    def error(path: str, exc: BaseException) -> None:
        nonlocal errors
        errors += 1
        if len(first_errors) < 5:
            first_errors.append(f"{path}: {type(exc).__name__}: {exc}")

    root = fs.open_dir(path="/")
    seen = {root.info.addr}
    stack: list[tuple[str, pytsk3.Directory]] = [("", root)]
    while stack:
        parent, directory = stack.pop()
        for f in directory:
            try:
                name = f.info.name.name
                if name in (b".", b".."):
                    continue
                path = parent + "/" + name.decode("utf-8", "surrogateescape")
                if parent == "" and name == b"$OrphanFiles":
                    continue
                meta = f.info.meta
                if meta is None:
                    others += 1
                    continue
                is_dir = meta.type == pytsk3.TSK_FS_META_TYPE_DIR
                if is_dir:
                    dirs += 1
                elif meta.type == pytsk3.TSK_FS_META_TYPE_REG:
                    files += 1
                else:
                    others += 1
                for attr in f:
                    for run in attr:
                        runs.append((run.addr, run.len))
                        if not run.flags & _NOT_ON_DISK:
                            blocks += run.len
                if is_dir and meta.addr not in seen:
                    seen.add(meta.addr)
                    stack.append((path, f.as_directory()))
            except Exception as exc:  # TSK raises IOError on some entries: count, go on
                error(parent + "/" + repr(getattr(getattr(f.info, "name", None), "name", "?")), exc)
    for line in first_errors:
        print(f"walk_pytsk3: error: {line}", file=sys.stderr)
    print(
        f"pytsk3 files={files} dirs={dirs} others={others} runs={len(runs)} "
        f"blocks={blocks} errors={errors} seconds={time.perf_counter() - t0:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
