"""The house rules, checked by reading the code (docs/architecture.md):

- imports run one way between the packages (``model`` imports only ``errors``; ``layers``
  never imports ``store``, ``trace`` or ``cli``; ``trace`` uses ``model`` and ``store``, never
  ``layers``; ``cli`` sits on top; ``parsers`` and ``reports`` are leaves);
- the mapper walks its registries and names no filesystem or volume manager;
- no library code prints, or changes the state of the process it runs in: only the ``bmap``
  program's entry point sets its process up, and it does;
- the package picture in docs/architecture.md is the code's.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_depgraph():
    spec = importlib.util.spec_from_file_location("depgraph", ROOT / "scripts" / "depgraph.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


depgraph = _load_depgraph()

#: What the modules of each part may import of the project (prefixes of module names); the
#: longest key that prefixes a module's name is its part.
ALLOWED: dict[str, tuple[str, ...]] = {
    "parsers": ("parsers",),
    "reports": ("reports",),
    "bmap.errors": ("bmap.errors", "parsers.errors"),
    "bmap.model": ("bmap.model", "bmap.errors"),
    "bmap.images": ("bmap.images", "bmap.errors", "parsers"),
    "bmap.layers": ("bmap.layers", "bmap.model", "bmap.images", "bmap.errors", "parsers"),
    "bmap.store": ("bmap.store", "bmap.model", "bmap.errors"),
    "bmap.trace": ("bmap.trace", "bmap.store", "bmap.model", "bmap.errors"),
    "bmap.fleet": (
        "bmap.fleet",
        "bmap.layers",
        "bmap.images",
        "bmap.store",
        "bmap.trace",
        "bmap.model",
        "bmap.errors",
    ),
    "bmap.cli": ("bmap", "parsers", "reports"),
    "bmap": ("bmap", "parsers", "reports"),  # the root: the lazy public API, python -m bmap
}


def _part(module: str) -> str:
    parts = [p for p in ALLOWED if module == p or module.startswith(p + ".")]
    return max(parts, key=len)


def _allowed(target: str, allowed: tuple[str, ...]) -> bool:
    return any(target == a or target.startswith(a + ".") for a in allowed)


def test_imports_run_one_way():
    modules = depgraph.project_modules()
    assert len(modules) > 40, "the project's modules were not found"
    bad = []
    for name, path in modules.items():
        allowed = ALLOWED[_part(name)]
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module == "bmap"
                and [a.name for a in node.names] == ["__version__"]
            ):
                continue  # the version string: the root package's one constant
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}:{node.lineno}: a relative import"
                targets = [node.module or ""]
            for target in targets:
                if target.split(".")[0] in depgraph.TOP_PACKAGES and not _allowed(target, allowed):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {target}")
    assert not bad, "\n".join(bad)


def test_the_rules_are_enforced_by_this_test():
    """A module of a lower part that imported a higher one would be caught."""
    assert not _allowed("bmap.store.mapfile", ALLOWED["bmap.layers"])
    assert not _allowed("bmap.layers.mapper", ALLOWED["bmap.trace"])
    assert not _allowed("bmap.images", ALLOWED["bmap.model"])
    assert not _allowed("bmap.cli.commands", ALLOWED["bmap.store"])
    assert not _allowed("bmap.errors", ALLOWED["parsers"])
    assert _part("bmap.layers.ext") == "bmap.layers"
    assert _part("bmap") == "bmap"


def test_the_mapper_names_no_filesystem_and_no_volume_manager():
    """The walk knows the layers only through the registries: adding a filesystem is a module
    and a registry line, not an edit of the mapper."""
    from bmap.layers import registry

    names = set()
    for entry in (*registry.CONTENT_MAPPERS, *registry.VOLUME_MANAGERS):
        names.update(entry.kinds)
        names.add(entry.module)
        names.add(entry.module.rpartition(".")[2])
    assert {"ext4", "swap", "LVM2_member", "bmap.layers.lvm"} <= names
    for module in ("bmap/layers/mapper.py", "bmap/layers/content.py"):
        tree = ast.parse((ROOT / module).read_text())
        used = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                used.add(node.id)
            elif isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                used.add(node.value)
            elif isinstance(node, ast.ImportFrom):
                used.add(node.module or "")
                used.update(a.name for a in node.names)
            elif isinstance(node, ast.Import):
                used.update(a.name for a in node.names)
        assert not used & names, f"{module} names {sorted(used & names)}"


def test_no_print_in_library_code():
    for package in ("parsers", "bmap", "reports"):
        for path in (ROOT / package).rglob("*.py"):
            if path.parent.name == "cli" or path.name == "__main__.py":
                continue
            tree = ast.parse(path.read_text())
            calls = [
                n
                for n in ast.walk(tree)
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
            ]
            assert not calls, f"print() in {path.relative_to(ROOT)}"


#: Calls that change the process: only the program's set-up may make them, and the worker's
#: child (in its own process) sets its own signal handler.
_PROCESS_STATE = {
    "gc.disable",
    "gc.enable",
    "gc.freeze",
    "gc.set_threshold",
    "signal.signal",
    "os.environ.setdefault",
    "os.environ.update",
    "os.putenv",
    "os.unsetenv",
    "sys.setswitchinterval",
    "sys.setrecursionlimit",
}
_MAY_CHANGE_THE_PROCESS = {
    "bmap/cli/program.py": _PROCESS_STATE,
    "bmap/trace/worker.py": {"signal.signal"},
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def test_no_library_code_changes_the_process_state():
    """Statically: no call that changes the environment, the collector, signal handlers or
    malloc outside the program's set-up."""
    found = []
    for package in ("parsers", "bmap", "reports"):
        for path in (ROOT / package).rglob("*.py"):
            where = str(path.relative_to(ROOT))
            allowed = _MAY_CHANGE_THE_PROCESS.get(where, set())
            text = path.read_text()
            if "mallopt" in text and where != "bmap/cli/program.py":
                found.append(f"{where}: mallopt")
            for node in ast.walk(ast.parse(text)):
                call = _dotted(node.func) if isinstance(node, ast.Call) else ""
                if call in _PROCESS_STATE and call not in allowed:
                    found.append(f"{where}:{node.lineno}: {call}()")
                targets = node.targets if isinstance(node, ast.Assign) else []
                for target in targets:
                    if isinstance(target, ast.Subscript) and _dotted(target.value) == "os.environ":
                        found.append(f"{where}:{node.lineno}: os.environ[...] =")
    assert not found, "\n".join(found)


_STATE_PROBE = """
import gc, os, signal, sys
def state():
    handlers = {}
    for sig in signal.valid_signals():
        try:
            handlers[int(sig)] = repr(signal.getsignal(sig))
        except (OSError, ValueError):
            pass
    return (dict(os.environ), gc.isenabled(), gc.get_threshold(), gc.get_freeze_count(),
            handlers, sys.getswitchinterval(), sys.getrecursionlimit())
"""

_LIBRARY_CALLS = (
    _STATE_PROBE
    + """
before = state()
import io, lzma, tempfile
from pathlib import Path
from click.testing import CliRunner
import bmap
from bmap.cli import main
from bmap.store.lookup import lookup
from bmap.trace.annotate import Annotator
from bmap.trace.logjob import NbdkitLogJob
from bmap.trace.output import TraceWriter
folder = Path(tempfile.mkdtemp())
image = folder / "disk.img"
image.write_bytes(lzma.decompress(Path(sys.argv[1]).read_bytes()))
images = bmap.open_images([image])
blockmap = bmap.map_images(images)
for fmt in ("bmap", "csv", "jsonl"):
    bmap.write_map(blockmap, folder / f"m.{fmt}", fmt)
frame = bmap.read_map(folder / "m.csv")
lookup(frame, 1, [(0x100400, 0x100401)], "m.csv")
log = folder / "log"
log.write_text("2024-05-01 10:00:00.100700 connection=1 Read id=1 offset=0x0 count=0x200 ...\\n"
               "2024-05-01 10:00:00.100701 connection=1 ...Read id=1 return=0\\n")
annotator = Annotator(frame, 1)
writer = TraceWriter(annotator, "text", False, io.BytesIO())
job = NbdkitLogJob(open(log, "rb"), str(log))
writer.consume(job)
job.close()
writer.close()
runner = CliRunner()
for args in (["map", str(image), "-o", str(folder / "cli.bmap")], ["info", str(image)],
             ["lookup", str(folder / "m.csv"), "1M"], ["trace", str(folder / "m.csv"), str(log)]):
    result = runner.invoke(main, args)
    assert result.exit_code in (0, 3), (args, result.output)
after = state()
for name, a, b in zip(("environment", "gc enabled", "gc thresholds", "gc frozen", "signals",
                       "switch interval", "recursion limit"), before, after):
    assert a == b, f"{name} changed: {a!r} -> {b!r}"
print("unchanged")
"""
)


def test_the_library_changes_no_process_state():
    """Dynamically, in a fresh interpreter: importing bmap, mapping, writing and reading maps,
    looking up, tracing (with the worker process) and running the commands in-process leave
    the environment, the collector, the signal handlers and the interpreter's limits as
    they were."""
    done = subprocess.run(
        [sys.executable, "-c", _LIBRARY_CALLS, str(ROOT / "samples" / "gpt-512.img.xz")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "unchanged"


_PROGRAM = (
    _STATE_PROBE
    + """
import os
os.environ.pop("OPENBLAS_NUM_THREADS", None)
before = state()
real_exit = os._exit
def leave(code):
    from bmap.cli import program
    import json
    after = state()
    print(json.dumps({"code": code, "threads": after[0].get("OPENBLAS_NUM_THREADS"),
                      "threshold": after[2][0], "default": before[2][0],
                      "applied": program.APPLIED, "numpy": "numpy" in sys.modules}), flush=True)
    real_exit(code)
os._exit = leave
sys.argv = ["bmap", "map", sys.argv[1], "-o", sys.argv[2]]
from bmap.cli import run
run()
"""
)


def test_the_program_sets_its_process_up(tmp_path):
    """``bmap`` (the console entry point) sets the thread count before numpy is imported,
    raises the collector's threshold, tunes malloc, and leaves with the quick exit."""
    import lzma

    image = tmp_path / "disk.img"
    image.write_bytes(lzma.decompress((ROOT / "samples" / "whole-disk-ext4.img.xz").read_bytes()))
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM, str(image), str(tmp_path / "out.bmap")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    import json

    from bmap.cli.program import GC_THRESHOLD

    seen = json.loads(done.stdout)
    assert seen["code"] == 0  # the quick exit was taken, with the command's code
    assert seen["threads"] == "1"
    assert seen["threshold"] == GC_THRESHOLD != seen["default"]
    # Set while numpy was not imported yet; numpy came after, with the command.
    assert seen["applied"] == {
        "openblas_threads": "1",
        "gc_threshold": GC_THRESHOLD,
        "malloc": True,
    }
    assert seen["numpy"]
    assert (tmp_path / "out.bmap").stat().st_size > 0


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
    neither the LVM mapper nor pandas nor the index nor the trace (a fresh interpreter, so
    nothing an earlier test imported counts)."""
    import lzma

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
    assert "bmap.layers.ext" in loaded  # the probe did map the filesystem
    assert (tmp_path / "out.bmap").stat().st_size > 0
    for module in ("bmap.layers.lvm", "pandas", "bmap.store.index", "bmap.trace"):
        assert module not in loaded, module


def test_the_package_picture_is_the_codes():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "depgraph.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
