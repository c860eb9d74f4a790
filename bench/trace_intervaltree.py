"""The straightforward annotator the trace benchmark compares against: every line of the map
in an intervaltree.IntervalTree, each request of an nbdkit log looked up in it, the innermost
(shortest) interval printed. Usage: trace_intervaltree.py MAP.csv LOG"""

from __future__ import annotations

import csv
import re
import sys

from intervaltree import IntervalTree

ENTER = re.compile(
    r"connection=(\d+) (Read|Write) id=(\d+) offset=(0x[0-9a-f]+) count=(0x[0-9a-f]+)"
)
LEAVE = re.compile(r"connection=(\d+) \.\.\.(Read|Write) id=(\d+) return=(-?\d+)")


def main() -> None:
    tree = IntervalTree()
    with open(sys.argv[1], newline="") as fh:
        for row in csv.DictReader(fh):
            if row["disk"] == "1":
                tree.addi(
                    int(row["start"]),
                    int(row["end"]),
                    (row["type"], row["device"], row["kind"], row["path"]),
                )
    pending = {}
    out = sys.stdout
    with open(sys.argv[2]) as fh:
        for line in fh:
            m = ENTER.search(line)
            if m:
                pending[(m[1], m[3])] = (line[:26], m[2], int(m[4], 16), int(m[5], 16))
                continue
            m = LEAVE.search(line)
            if m:
                request = pending.pop((m[1], m[3]), None)
                if request is None:
                    continue
                stamp, op, offset, count = request
                hits = tree.overlap(offset, offset + count)
                if hits:
                    best = min(hits, key=lambda iv: iv.end - iv.begin)
                    name = " ".join(x for x in best.data if x)
                else:
                    name = "(nothing)"
                out.write(f"{stamp} {op} {name} {offset:x}+{count:x}\n")


if __name__ == "__main__":
    main()
