"""Reports benchmark: ``bmap report`` of the /usr image against ``bmap map``; its pages in Chromium.

    python bench/reports_bench.py [--rounds 3] [--write] [--no-browser] [--no-trace-csv]

Uses the cached files of ``make bench`` (never rebuilds them): the image
``build/bench/usr-full.img`` (bench/make_image.py) and the nbdkit log-filter log of 1,000,000
reads ``build/bench/trace-1000000.log`` (bench/trace_bench.py). Exits 2 when either is missing.

1. Whole processes, each started by ``/usr/bin/time -f '%e %M'`` (wall time measured here
   around it; peak RSS is GNU time's ``%M``, the child's ``ru_maxrss``), in a scratch folder:

   - ``python -m bmap map IMG -o x.bmap`` (a fresh path every run: ``bmap map`` has no
     ``--force``), the baseline;
   - ``python -m bmap report IMG -o r.html``;
   - ``python -m bmap report IMG --csv DIR``;
   - ``python -m bmap report IMG --trace LOG -o boot.html``;
   - ``python -m bmap report IMG --trace t.csv -o boot2.html``, where t.csv is
     ``bmap trace IMG LOG -f csv``, made once untimed (``--no-trace-csv`` leaves it out).

   Outputs are removed before each run. One untimed warm-up of each command, then ROUNDS
   rounds alternating between them (round-robin); children get ``OPENBLAS_NUM_THREADS=1``
   and bmap's bytecode is compiled first (bench/report.py ``child_env``); the page cache is
   not dropped. Per command: median and fastest wall time, median over the median of
   ``bmap map``, the largest peak RSS, the output's size (for ``--csv`` the folder's total).
2. Unless ``--no-browser``: r.html and boot.html opened in Debian's Chromium
   (``/usr/bin/chromium``, headless, through Playwright; no browser is downloaded), one
   untimed load each, then ROUNDS loads alternating, each in a new browser context. Timed
   from ``page.goto`` until every Plotly figure is drawn (each ``.figure`` div has Plotly's
   ``.main-svg`` and its ``_fullLayout``, and a canvas when it holds WebGL traces) and every
   table is filled (each table body holds the rows of its first page, as counted from the
   table's JSON in the file). Every request other than the file itself is recorded and
   aborted; a request, a console error or an uncaught page error makes the script exit 1.
3. Prints a Markdown section; with ``--write`` it replaces the ``bench:reports`` section of
   BENCHMARKS.md (appended at the end when the markers are absent). Targets from issue 12:
   the HTML report of /usr under 10 MiB; report times stated as a ratio to ``bmap map``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import report  # noqa: E402

ROOT = HERE.parent
BUILD = ROOT / "build" / "bench"
IMAGE = BUILD / "usr-full.img"
LOG = BUILD / "trace-1000000.log"
#: GNU time (Debian package ``time``): starts each child and reports its peak RSS.
TIME = "/usr/bin/time"
CHROMIUM = "/usr/bin/chromium"
#: bmap exits 3 when its output is written but the image has warnings: still a finished run.
OK_CODES = {0, 3}
#: The issue's target for the HTML report of /usr.
TARGET_HTML_MIB = 10
#: Rows per page of the report's tables (``PAGE`` in reports/html.py's script).
TABLE_PAGE = 50
#: The longest a page may take to become usable, in milliseconds.
PAGE_TIMEOUT_MS = 180_000

#: True once every figure is drawn and every table shows its first page. ``expected.tables``
#: maps a table div's id to the rows its body must hold; ``expected.gl`` lists the figures
#: holding WebGL traces, drawn on a canvas.
READY_JS = """(expected) => {
  const figures = Array.from(document.querySelectorAll("div.figure"));
  if (figures.length === 0) return false;
  for (const fig of figures) {
    if (!fig._fullLayout || !fig.querySelector(".main-svg")) return false;
  }
  for (const id of expected.gl) {
    if (!document.querySelector("#" + id + " canvas")) return false;
  }
  for (const [id, rows] of Object.entries(expected.tables)) {
    const body = document.querySelector("#" + id + " tbody");
    if (!body || body.rows.length !== rows) return false;
  }
  return true;
}"""


def log(msg: str) -> None:
    print(f"reports bench: {msg}", file=sys.stderr, flush=True)


@dataclass
class Command:
    """One timed command: its arguments (``{n}`` in them is the run's number) and output."""

    name: str
    shown: str  # the command line as BENCHMARKS.md shows it
    args: list[str]
    output: str  # file or folder, relative to the scratch folder; may hold ``{n}``
    walls: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    size: int = 0

    def median(self) -> float:
        return statistics.median(self.walls)


def commands(trace_csv: Path | None) -> list[Command]:
    bmap = [sys.executable, "-m", "bmap"]
    img, lg = str(IMAGE), str(LOG)
    made = [
        Command(
            "bmap map",
            "bmap map IMG -o x.bmap",
            [*bmap, "map", img, "-o", "x-{n}.bmap"],
            "x-{n}.bmap",
        ),
        Command(
            "report -o r.html",
            "bmap report IMG -o r.html",
            [*bmap, "report", img, "-o", "r.html"],
            "r.html",
        ),
        Command(
            "report --csv",
            "bmap report IMG --csv csvdir",
            [*bmap, "report", img, "--csv", "csvdir"],
            "csvdir",
        ),
        Command(
            "report --trace LOG",
            "bmap report IMG --trace LOG -o boot.html",
            [*bmap, "report", img, "--trace", lg, "-o", "boot.html"],
            "boot.html",
        ),
    ]
    if trace_csv is not None:
        made.append(
            Command(
                "report --trace t.csv",
                "bmap report IMG --trace t.csv -o boot2.html",
                [*bmap, "report", img, "--trace", str(trace_csv), "-o", "boot2.html"],
                "boot2.html",
            )
        )
    return made


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def run_once(cmd: Command, work: Path, n: int) -> tuple[float, int]:
    """Run ``cmd`` as a whole process under GNU time: its wall time and peak RSS (KiB).

    GNU time forks the child from a small process: a child forked from this Python process
    would report this process's own RSS as a floor in its ``ru_maxrss``.
    """
    out = work / cmd.output.format(n=n)
    remove(out)
    time_path = work / "time.txt"
    args = [a.format(n=n) for a in cmd.args]
    with open(work / "stderr.txt", "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [TIME, "-f", "%e %M", "-o", str(time_path), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=work,
            env=report.child_env(),
            check=False,
        )
        wall = time.perf_counter() - t0
    if proc.returncode not in OK_CODES:
        stderr = (work / "stderr.txt").read_text(errors="replace")
        raise SystemExit(
            f"reports bench: {' '.join(args)} exited {proc.returncode}:\n{stderr[-2000:]}"
        )
    cmd.size = size_of(out)
    if "{n}" in cmd.output:  # the map: a fresh path every run, removed once measured
        remove(out)
    return wall, int(time_path.read_text().split()[-1])


def make_trace_csv(work: Path) -> Path:
    """``bmap trace IMG LOG -f csv``, untimed: the input of the last command."""
    out = work / "t.csv"
    log("writing bmap trace's CSV of the log (untimed)")
    with open(out, "wb") as fh:
        subprocess.run(
            [sys.executable, "-m", "bmap", "trace", str(IMAGE), str(LOG), "-f", "csv"],
            stdout=fh,
            stderr=subprocess.PIPE,
            cwd=work,
            env=report.child_env(),
            check=True,
        )
    return out


def expected(page: Path) -> dict[str, Any]:
    """What the page shows once usable, read from its JSON blocks: each table div's id and
    the rows of its first page (``tables``), and the figures holding WebGL traces (``gl``)."""
    text = page.read_text(encoding="utf-8", errors="replace")
    block = r'<script type="application/json" class="{}-data" data-for="([^"]+)">(.*?)</script>'
    tables = {
        m.group(1): min(TABLE_PAGE, len(json.loads(m.group(2))["rows"]))
        for m in re.finditer(block.format("table"), text, re.DOTALL)
    }
    gl = [
        m.group(1)
        for m in re.finditer(block.format("figure"), text, re.DOTALL)
        if any(str(t.get("type", "")).endswith("gl") for t in json.loads(m.group(2))["data"])
    ]
    return {"tables": tables, "gl": gl}


@dataclass
class PageRuns:
    path: Path
    expected: dict[str, Any]
    usable: list[float] = field(default_factory=list)  # seconds from goto until usable
    loaded: list[float] = field(default_factory=list)  # seconds from goto until the load event
    problems: list[str] = field(default_factory=list)


def load_page(browser: Any, runs: PageRuns) -> tuple[float, float]:
    """One load of a page in a new context: seconds until the load event and until usable."""
    url = runs.path.as_uri()
    context = browser.new_context()
    page = context.new_page()

    def route(r: Any) -> None:  # the request itself is recorded by the "request" event
        if r.request.url == url:
            r.continue_()
        else:
            r.abort()

    def console(msg: Any) -> None:
        if msg.type == "error":
            runs.problems.append(f"console error: {msg.text[:300]}")

    context.route("**/*", route)
    page.on("console", console)
    page.on("pageerror", lambda exc: runs.problems.append(f"page error: {str(exc)[:300]}"))
    page.on(
        "request",
        lambda r: None if r.url == url else runs.problems.append(f"request {r.url[:200]}"),
    )
    try:
        t0 = time.perf_counter()
        page.goto(url, wait_until="load", timeout=PAGE_TIMEOUT_MS)
        loaded = time.perf_counter() - t0
        page.wait_for_function(READY_JS, arg=runs.expected, timeout=PAGE_TIMEOUT_MS)
        usable = time.perf_counter() - t0
    finally:
        context.close()
    return loaded, usable


def browse(pages: list[PageRuns], rounds: int) -> str:
    """Load each page once untimed, then ``rounds`` times alternating; Chromium's version."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            for runs in pages:
                load_page(browser, runs)
            for r in range(rounds):
                for runs in pages:
                    loaded, usable = load_page(browser, runs)
                    runs.loaded.append(loaded)
                    runs.usable.append(usable)
                    log(f"load {r + 1}: {runs.path.name} usable after {usable:.2f} s")
            return browser.version
        finally:
            browser.close()


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def section(
    info: dict[str, str],
    cmds: list[Command],
    rounds: int,
    pages: list[PageRuns],
    chromium: str,
    changed: bool,
    trace_csv_size: int,
) -> str:
    base = cmds[0].median()
    rows = [
        [
            f"`{c.shown}`",
            report.fmt_seconds(c.median()),
            report.fmt_seconds(min(c.walls)),
            f"{c.median() / base:.1f}x",
            report.fmt_mib(max(c.rss_kib)),
            mib(c.size),
        ]
        for c in cmds
    ]
    html_size = next(c.size for c in cmds if c.name == "report -o r.html")
    date = time.strftime("%Y-%m-%d", time.gmtime())
    lines = [
        f"## Reports ({date}, issue 12)",
        "",
        f"{report.machine_line(info)}; bmap {info['bmap']} at {info['tree']}.",
        "",
        f"IMG is build/bench/usr-full.img ({IMAGE.stat().st_size / 2**30:.1f} GiB, ext4 of /usr), "
        f"LOG build/bench/trace-1000000.log (nbdkit log filter, 1,000,000 reads, "
        f"{LOG.stat().st_size / 2**20:.0f} MiB)"
        + (
            f"; t.csv is `bmap trace IMG LOG -f csv` ({mib(trace_csv_size)}, made once, untimed)"
            if trace_csv_size
            else ""
        )
        + ". Each command is `python -m bmap ...`, a whole process under "
        f"`/usr/bin/time -f '%e %M'`; one untimed warm-up each, then {rounds} round(s) "
        "alternating between the commands, page cache warm; `vs bmap map` is the command's "
        "median over the median of `bmap map` (issue 12 states report times that way). Peak "
        "RSS is the largest of GNU time's `%M`; output is the file written (for `--csv` the "
        "folder's total).",
        "",
        report.table(["command", "median", "fastest", "vs bmap map", "peak RSS", "output"], rows),
        "",
        f"Target: the HTML report of /usr under {TARGET_HTML_MIB} MiB: {mib(html_size)}, "
        + ("met." if html_size < TARGET_HTML_MIB * 2**20 else "**not met**."),
    ]
    if changed:
        lines += ["", "**bmap's sources changed during the run: the figures mix versions.**"]
    if pages:
        lines += [
            "",
            f"Time until the page is usable in headless Chromium {chromium} (Debian's, "
            "through Playwright): from `page.goto` until every Plotly figure is drawn and "
            f"every table shows its first page; one untimed load, then {rounds} load(s) each, "
            "alternating, each in a new browser context:",
            "",
            report.table(
                ["page", "size", "usable, median", "usable, range", "load event, median"],
                [
                    [
                        p.path.name,
                        mib(p.path.stat().st_size),
                        report.fmt_seconds(statistics.median(p.usable)),
                        f"{min(p.usable):.2f}-{max(p.usable):.2f} s",
                        report.fmt_seconds(statistics.median(p.loaded)),
                    ]
                    for p in pages
                ],
            ),
            "",
            "No page made a request other than the file itself; no console error, no page error.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    ap.add_argument("--rounds", type=int, default=3, help="timed runs of each command (3)")
    ap.add_argument(
        "--write", action="store_true", help="rewrite the bench:reports section of BENCHMARKS.md"
    )
    ap.add_argument("--no-browser", action="store_true", help="skip the Chromium page loads")
    ap.add_argument(
        "--no-trace-csv",
        action="store_true",
        help="skip the report of bmap trace's own CSV (about 30 s a run)",
    )
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    missing = [p for p in (IMAGE, LOG) if not p.exists()]
    if missing:
        print(
            f"reports bench: {', '.join(str(p.relative_to(ROOT)) for p in missing)} missing: "
            "run `make bench` first (bench/trace_bench.py builds the log)",
            file=sys.stderr,
        )
        return 2
    if not Path(TIME).exists():
        print(f"reports bench: {TIME} is missing: apt-get install time", file=sys.stderr)
        return 2
    if not args.no_browser and not Path(CHROMIUM).exists():
        print(f"reports bench: {CHROMIUM} is missing (or use --no-browser)", file=sys.stderr)
        return 2
    info = report.machine()
    fingerprint = report.code_fingerprint()
    with tempfile.TemporaryDirectory(prefix="bmap-reports-bench-") as tmp:
        work = Path(tmp)
        trace_csv = None if args.no_trace_csv else make_trace_csv(work)
        cmds = commands(trace_csv)
        n = 0
        log("warm-up")
        for cmd in cmds:
            run_once(cmd, work, n := n + 1)
        for r in range(args.rounds):
            for cmd in cmds:
                wall, rss = run_once(cmd, work, n := n + 1)
                cmd.walls.append(wall)
                cmd.rss_kib.append(rss)
                log(f"round {r + 1}: {cmd.name} {wall:.2f} s, {rss // 1024} MiB")
        changed = report.code_fingerprint() != fingerprint
        pages: list[PageRuns] = []
        chromium = ""
        if not args.no_browser:
            pages = [
                PageRuns(work / name, expected(work / name)) for name in ("r.html", "boot.html")
            ]
            chromium = browse(pages, args.rounds)
            problems = [f"{p.path.name}: {what}" for p in pages for what in p.problems]
            if problems:
                print("\n".join(problems), file=sys.stderr)
                log("the pages made requests or logged errors: nothing written")
                return 1
        csv_size = trace_csv.stat().st_size if trace_csv is not None else 0
        body = section(info, cmds, args.rounds, pages, chromium, changed, csv_size)
    print(body)
    if args.write:
        report.write_section("reports", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
