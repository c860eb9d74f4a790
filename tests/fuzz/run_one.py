"""One atheris campaign on one target: ``python -m tests.fuzz.run_one TARGET [libFuzzer
options] CORPUS...`` (scripts/fuzz.py starts it). bmap and parsers are instrumented for
coverage as they are imported; an exception other than the project's own errors, a failed
check, a timeout or too much memory is a crash, written where ``-artifact_prefix`` says."""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["bmap", "parsers"]):
    import bmap.images
    import bmap.layers.lvm
    import bmap.layers.mapper
    import bmap.store.lookup
    import bmap.store.mapfile
    import bmap.trace.logs  # noqa: F401
    import parsers.lvm2.metadata  # noqa: F401

from tests.fuzz.targets import TARGETS


def main() -> None:
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
