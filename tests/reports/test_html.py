"""The HTML report opened in real headless Chromium (Debian's ``chromium``, driven by
Playwright for Python; never a downloaded browser): it renders, makes no request, logs no
error, its tables sort and filter, and no name from an image can inject anything."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reports.html import script_json
from tests.bmap.cli.test_cli import run
from tests.conftest import run_tool, tool

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)<\\script>",
    "=cmd|'calc'!A0",
    "<\\script><script>alert(2)<\\script>",
    "a\u2028b",
]


def test_script_json_cannot_close_its_block():
    text = script_json({"name": "</script><!--<script>&\u2028\u2029"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == {"name": "</script><!--<script>&\u2028\u2029"}


def test_layout_bands_merge_neighbours_and_keep_partitions(sample):
    from bmap.images import open_images
    from bmap.layers.mapper import map_images
    from reports.html import layout_bands

    (disk,) = open_images([sample("gpt-512")])
    try:
        frame = map_images([disk]).to_dataframe()
    finally:
        disk.close()
    bands = layout_bands(frame)
    # mbr, gpt-header and gpt-entries lie end to end: one metadata band of 3 lines.
    first = bands[(bands["track"] == "/dev/sda") & (bands["cls"] == "metadata")].iloc[0]
    assert (first["start"], first["end"], first["count"]) == (0, 17408, 3)
    parts = bands[bands["track"] == "partitions"]
    assert parts["label"].tolist() == ["/dev/sda1", "/dev/sda2", "/dev/sda3", "/dev/sda4"]
    # 14: each track keeps a band per class (the ESP's FAT adds its metadata and free space).
    small = layout_bands(frame, max_bands=14)
    assert len(small) <= 14
    assert small[small["track"] == "partitions"]["label"].tolist() == parts["label"].tolist()
    # Summarising keeps every byte of each class under some band.
    files = frame[frame["type"] == "f"]
    band = small[(small["track"] == "/dev/sda2") & (small["cls"] == "file")].iloc[0]
    assert band["start"] <= files["start"].min() and band["end"] >= files["end"].max()
    assert band["count"] == len(files)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium; make test does it)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install .[test])"
    )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Opened:
    """A report open in a page, with what the page did: requests, console errors, dialogs."""

    def __init__(self, browser: Any, report: Path) -> None:
        self.url = report.resolve().as_uri()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.route("**/*", self._route)
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", self._dialog)
        self.page.goto(self.url)
        self.page.wait_for_load_state("load")
        self.page.wait_for_timeout(300)

    def _route(self, route: Any) -> None:
        if route.request.url == self.url:
            route.continue_()
        else:
            self.requests.append(route.request.url)
            route.abort()

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def check_clean(self) -> None:
        assert self.requests == []
        assert self.errors == []
        assert self.dialogs == []


def _report(tmp_path: Path, *args: object) -> Path:
    out = tmp_path / "report.html"
    result = run("report", *args, "-o", out)
    assert result.exit_code == 0, result.stderr
    return out


def _not_blank(page: Any) -> None:
    """The screenshot has more than a few colours (decoded by the browser itself)."""
    import base64

    shot = base64.b64encode(page.screenshot(full_page=False)).decode()
    blank = page.context.browser.new_page()
    try:
        colours = blank.evaluate(
            """async (data) => {
                const img = new Image(); img.src = "data:image/png;base64," + data;
                await img.decode();
                const c = document.createElement("canvas");
                c.width = img.width; c.height = img.height;
                const g = c.getContext("2d"); g.drawImage(img, 0, 0);
                const px = g.getImageData(0, 0, c.width, c.height).data;
                const seen = new Set();
                for (let i = 0; i < px.length; i += 28)
                    seen.add(px[i] << 16 | px[i + 1] << 8 | px[i + 2]);
                return seen.size;
            }""",
            shot,
        )
    finally:
        blank.close()
    assert colours > 10


def _table_rows(page: Any, table: str) -> list[list[str]]:
    return page.eval_on_selector_all(
        f"{table} tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent))"
    )


def test_disk_report_renders_offline_and_its_tables_sort_and_filter(browser, sample, tmp_path):
    report = _report(tmp_path, sample("gpt-512"))
    text = report.read_text()
    assert (
        "http://" not in text.split("<script>")[0] and "https://" not in text.split("<script>")[0]
    )
    opened = Opened(browser, report)
    page = opened.page
    assert page.locator("#layout .figure .main-svg").count() > 0
    assert page.locator("#space .figure .main-svg").count() > 0
    _not_blank(page)
    # "Largest files" is the second table (after the findings).
    largest = "#table-2"
    rows = _table_rows(page, largest)
    assert rows[0][2] == "/data/big.bin"
    page.click(f"{largest} th:text-is('size')")  # ascending
    sizes = [int(r[4]) for r in _table_rows(page, largest)]
    assert sizes == sorted(sizes) and len(sizes) > 3
    page.click(f"{largest} th:text-is('size')")  # descending
    assert [int(r[4]) for r in _table_rows(page, largest)] == sorted(sizes, reverse=True)
    page.fill(f"{largest} input.filter", "lorem")
    assert [r[2] for r in _table_rows(page, largest)] == ["/docs/lorem.txt"]
    opened.check_clean()
    page.close()


def test_boot_report_draws_the_reads(browser, sample, tmp_path):
    from bmap.images import open_images
    from bmap.layers.mapper import map_images

    image = sample("gpt-512")
    (disk,) = open_images([image])
    try:
        frame = map_images([disk]).to_dataframe()
    finally:
        disk.close()
    big = frame[(frame["type"] == "f") & (frame["path"] == "/data/big.bin")].iloc[0]
    free = frame[(frame["type"] == "u") & (frame["kind"] == "unallocated")].iloc[0]
    log = tmp_path / "boot.csv"
    log.write_text(f"0,512\n{big.start},8192\n{free.start},4096\n")
    log2 = tmp_path / "boot2.csv"
    log2.write_text(f"0,512\n{big.start},4096\n")
    report = _report(tmp_path, image, "--trace", log, "--trace", log2)
    opened = Opened(browser, report)
    page = opened.page
    assert page.locator("#boot .figure .main-svg").count() >= 1
    assert page.locator("#boot canvas").count() >= 1  # scattergl draws on WebGL canvases
    assert "1 read piece(s) of unallocated" in page.inner_text("#boot")
    boot = page.inner_text("#boot")
    assert "/data/big.bin" in boot and "every run" in boot
    _not_blank(page)
    opened.check_clean()
    page.close()


@pytest.fixture(scope="module")
def hostile_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    mke2fs = tool("mke2fs")
    root = tmp_path_factory.mktemp("hostile")
    tree = root / "tree"
    (tree / "<b>dir</b>").mkdir(parents=True)
    for i, name in enumerate(HOSTILE):
        (tree / name).write_bytes(b"x" * (1024 * (i + 1)))
        (tree / "<b>dir</b>" / name).write_bytes(b"y" * 3000)
    image = root / "hostile.img"
    with open(image, "wb") as fh:
        fh.truncate(8 << 20)
    run_tool(mke2fs, "-q", "-F", "-t", "ext4", "-b", "1024", "-d", str(tree), str(image))
    return image


def test_hostile_names_show_as_text(browser, hostile_image, tmp_path):
    assert shutil.which("chromium") or Path(CHROMIUM).exists()
    report = _report(tmp_path, hostile_image)
    text = report.read_text()
    assert "<img src=x" not in text
    assert "<script>alert" not in text
    opened = Opened(browser, report)
    page = opened.page
    page.wait_for_timeout(300)
    assert page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    assert page.evaluate("document.querySelectorAll('b').length") == page.evaluate(
        "document.querySelectorAll('.counts b').length"
    )
    # Our two scripts run; every other <script> is a JSON data block.
    assert (
        page.evaluate("[...document.scripts].filter(s => s.type !== 'application/json').length")
        == 2
    )
    shown = page.inner_text("#tables")
    for name in HOSTILE:
        assert "/" + name.replace("\u2028", "") in shown.replace("\u2028", ""), name
    # Hovering the layout names a band with a hostile name as text, and runs nothing.
    page.hover("#layout .figure .bars path >> nth=-1", force=True)
    opened.check_clean()
    page.close()


def test_report_of_a_map_file_names_the_image_and_its_sha256(sample, tmp_path):
    from tests.conftest import sha256_file

    image = sample("gpt-512")
    bmap_file = tmp_path / "disk.bmap"
    assert run("map", image, "--sha256", "-o", bmap_file).exit_code == 0
    report = _report(tmp_path, bmap_file)
    text = report.read_text()
    assert sha256_file(image) in text
    assert str(image) in text and "32.0 MiB" in text
    assert run("report", image, "-o", tmp_path / "r.pdf").exit_code == 2


def _rows_after(page: Any, heading: str) -> list[list[str]]:
    """The shown rows of the table under the ``<h3>`` that starts with ``heading``."""
    table = page.locator(
        f"xpath=//h3[starts-with(normalize-space(.), '{heading}')]"
        "/following-sibling::div[contains(@class, 'table')][1]"
    )
    return table.evaluate(
        "t => [...t.querySelectorAll('tbody tr')].map(r => [...r.cells].map(c => c.textContent))"
    )


def _completed_reads(log: str) -> list[tuple[int, int]]:
    """The reads of an nbdkit log that completed, ``(start, end)`` in completion order: the
    test's own reading of the log (two patterns), not bmap's."""
    import re

    asked: dict[tuple[str, str], tuple[int, int]] = {}
    done = []
    pattern = re.compile(
        r"connection=(\d+) (\.\.\.)?Read id=(\d+) (?:offset=0x([0-9a-f]+) count=0x([0-9a-f]+)"
        r"|return=0)"
    )
    for m in pattern.finditer(log):
        key = (m[1], m[3])
        if m[2] is None:
            offset = int(m[4], 16)
            asked[key] = (offset, offset + int(m[5], 16))
        elif key in asked:
            done.append(asked.pop(key))
    return done


def test_boot_view_of_a_real_kernel_reading_through_nbdkit(
    browser, sample, tmp_path, kernel_client
):
    """The real kernel mounts the root partition through nbdkit's log filter (nbdfuse, a
    read-only loop device) and reads three files; the report of that log ranks them by their
    first read and counts their bytes read as the log and debugfs's extents say, and the page
    is clean."""
    from tests import ext_truth as T
    from tests.conftest import sfdisk_json

    image = sample("gpt-512")
    part = next(p for p in sfdisk_json(image)["partitions"] if p["name"] == "root")
    offset = part["start"] * 512
    mnt, log = kernel_client(image, offset, part["size"] * 512)
    wanted = ["/etc/fstab", "/docs/lorem.txt", "/data/big.bin"]
    sizes = {path: len((mnt / path.lstrip("/")).read_bytes()) for path in wanted}
    saved = tmp_path / "nbdkit.log"
    saved.write_text(log.read_text())
    # The truth: debugfs's extents of each file against the completed reads of the log.
    bs = int(T.dumpe2fs_header(image, offset)["Block size"])
    reads = _completed_reads(saved.read_text())
    first: dict[str, int] = {}
    read_bytes: dict[str, int] = {}
    for path in wanted:
        extents = [
            (offset + e.physical * bs, offset + (e.physical + e.length) * bs)
            for e in T.debugfs_stat(image, path, offset)["data_extents"]
        ]
        assert extents, f"{path} has no data blocks"
        overlaps = [
            (i, max(0, min(end, e_end) - max(start, e_start)))
            for i, (start, end) in enumerate(reads)
            for e_start, e_end in extents
        ]
        first[path] = min(i for i, n in overlaps if n)
        read_bytes[path] = sum(n for _, n in overlaps)
        assert read_bytes[path] >= sizes[path]
    report = _report(tmp_path, image, "--trace", saved)
    opened = Opened(browser, report)
    page = opened.page
    assert page.locator("#boot canvas").count() >= 1
    order = [r[2] for r in _rows_after(page, "Order of first reads of files")]
    assert [p for p in order if p in wanted] == sorted(wanted, key=first.__getitem__), order
    shown = {r[1]: int(r[2]) for r in _rows_after(page, "Bytes read per file")}
    assert {path: shown[path] for path in wanted} == read_bytes
    _not_blank(page)
    opened.check_clean()
    page.close()
