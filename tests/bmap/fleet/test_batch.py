"""``bmap batch`` on a real Dask cluster: a LocalCluster of two worker processes over 21
entries (the bundled samples, one of them all zeros, the Sleuth Kit family's test images and
an LVM volume group across two disks), and a scheduler and a worker started as separate
``dask`` processes on the loopback address, as a user scales out.

Truth: each image's own ``bmap map`` (run in-process here, written as CSV and read back)
equals its partition of the dataset, row for row; the image table holds each entry's paths,
sizes, SHA-256 (checked with hashlib) and findings; the broken image is a row with its error,
and the batch exits 10.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from bmap.cli.commands import main
from bmap.fleet.batch import Entry, entries_from, read_dataset, read_image_table
from bmap.store.mapfile import read_map
from tests.lvm_images import (  # noqa: F401 - pytest fixtures
    lvm_images_cache_fixture,
    lvm_two_image_fixture,
)
from tests.reports.test_html import browser  # noqa: F401 - pytest fixture
from tests.tsk_images import (  # noqa: F401 - pytest fixtures
    tsk_image_factory_fixture,
    tsk_images_cache_fixture,
)
from tests.ufs_images import BUILDERS as _UFS  # noqa: F401 - registers the UFS images

ROOT = Path(__file__).resolve().parents[3]
TSK_NAMES = [
    "fat12",
    "fat16",
    "fat32",
    "esp_in_gpt",
    "ntfs",
    "exfat",
    "iso",
    "hfsplus",
    "ufs1",
    "ufs2",
]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, tsk_image_factory, lvm_two_image) -> dict:
    """The entries' images in one folder (the samples decompressed, the others linked), and
    the two LVM disks as one entry."""
    folder = tmp_path_factory.mktemp("fleet")
    for sample in sorted((ROOT / "samples").glob("*.img.xz")):
        with lzma.open(sample) as src, open(folder / sample.name.removesuffix(".xz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    for name in TSK_NAMES:
        os.symlink(tsk_image_factory(name), folder / f"{name}.img")
    vg = "+".join(str(p) for p in lvm_two_image.images)
    return {"folder": folder, "vg": vg, "vg_paths": lvm_two_image.images}


def run_cli(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(main, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def own_map(paths: list[str], tmp: Path) -> pd.DataFrame:
    out = tmp / "own.csv"
    code, err = run_cli(["map", *paths, "-o", str(out), "--sha256"])
    assert code in (0, 3), err
    return read_map(out)


# -- entries --------------------------------------------------------------------------------


def test_entries_from_arguments_folders_and_a_listing(tmp_path):
    for name in ("a.img", "b.qcow2", "c.img", "notes.txt", "old.bmap", ".hidden"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.img").write_bytes(b"y")
    listing = tmp_path / "list.txt"
    listing.write_text("# the machines\nsub/a.img\na.img+c.img  # one VG\n\n")
    entries = entries_from([str(tmp_path)], listing)
    names = [e.name for e in entries]
    assert names == ["a", "b", "c", "a-2", "a+c"]
    assert entries[1] == Entry("b", (str(tmp_path / "b.qcow2"),))
    assert entries[3].paths == (str(tmp_path / "sub" / "a.img"),)
    assert entries[4].paths == (str(tmp_path / "a.img"), str(tmp_path / "c.img"))
    with pytest.raises(Exception, match="no such file"):
        entries_from([str(tmp_path / "missing.img")])
    with pytest.raises(Exception, match="no such file"):
        entries_from([f"{tmp_path / 'a.img'}+{tmp_path / 'gone.img'}"])


# -- a local cluster ------------------------------------------------------------------------


def test_a_local_cluster_of_two_workers_maps_the_fleet(fleet, tmp_path):
    out = tmp_path / "dataset"
    code, err = run_cli(
        ["batch", str(fleet["folder"]), fleet["vg"], "--out", str(out), "--workers", "2"]
    )
    table = read_image_table(out)
    assert len(table) >= 21
    assert code == 10, err  # zero.img is no disk
    (broken,) = table[table["error"] != ""].itertuples()
    assert broken.image == "zero" and broken.exit == 5 and "not a disk image" in broken.error
    assert "failed: zero: exit 5" in err and f"mapped {len(table) - 1} of {len(table)}" in err
    assert table["worker"].nunique() == 2  # both workers took entries
    maps = read_dataset(out)
    for row in table.itertuples():
        if row.error:
            assert row.image not in set(maps["image"])
            continue
        # The image table: paths, sizes, hashes.
        for path, size, digest in zip(row.paths, row.sizes, row.sha256):
            assert os.path.getsize(path) == size
            with open(path, "rb") as fh:
                assert hashlib.file_digest(fh, "sha256").hexdigest() == digest
        # The partition: each image's own map, row for row.
        got = maps[maps["image"] == row.image].drop(columns="image").reset_index(drop=True)
        want = own_map(list(row.paths), tmp_path)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
        findings = json.loads(row.findings)
        assert row.exit == (
            3 if any(f["severity"] in ("warning", "error") for f in findings) else 0
        )
    vg = table[table["image"].str.contains(r"\+")]
    assert len(vg) == 1 and len(vg.iloc[0].paths) == 2
    assert set(maps.loc[maps["image"] == vg.iloc[0].image, "type"]) >= {"l"}  # an LV across disks


def test_an_existing_dataset_is_not_overwritten(fleet, tmp_path):
    out = tmp_path / "dataset"
    out.mkdir()
    (out / "keep").write_text("mine")
    code, err = run_cli(["batch", str(fleet["folder"]), "--out", str(out)])
    assert code == 2 and "not empty" in err
    assert (out / "keep").read_text() == "mine"


# -- a scheduler and a worker started apart ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_running_scheduler_and_worker_on_the_loopback(fleet, tmp_path):
    """``dask scheduler`` and ``dask worker`` as separate processes, as a user starts them on
    machines that share the images' filesystem; ``bmap batch --scheduler`` sends the work."""
    dask = Path(sys.executable).parent / "dask"
    if not dask.exists():
        pytest.skip("the dask command is not installed")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    procs = [
        subprocess.Popen(
            [str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--dashboard-address", ":0", "--no-show"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        ),
    ]  # fmt: skip
    try:
        time.sleep(1.0)
        procs.append(
            subprocess.Popen(
                [str(dask), "worker", address, "--nthreads", "1", "--nworkers", "1",
                 "--no-dashboard", "--host", "127.0.0.1"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            )
        )  # fmt: skip
        from dask.distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
        out = tmp_path / "dataset"
        picked = [str(fleet["folder"] / n) for n in ("gpt-512.img", "fat32.img", "zero.img")]
        code, err = run_cli(["batch", *picked, "--out", str(out), "--scheduler", address])
        assert code == 10, err
        table = read_image_table(out)
        assert list(table["image"]) == ["gpt-512", "fat32", "zero"]
        assert table["worker"].iloc[0].split(":")[0] == socket.gethostname()
        maps = read_dataset(out, ["fat32"])
        want = own_map([picked[1]], tmp_path)
        got = maps.drop(columns="image").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


# -- boot logs and the fleet report -------------------------------------------------------------


def _log_reading(paths_ranges: list[tuple[int, int]]) -> str:
    """A CSV trace (offset,length per line) reading the given byte ranges, in order."""
    return "".join(f"{lo},{hi - lo}\n" for lo, hi in paths_ranges)


def test_boot_logs_and_the_fleet_report(fleet, tmp_path, browser):  # noqa: F811
    """Boot logs for three FAT images: each reads /README.TXT, the FAT32 one /big.bin too (the
    ranges from each image's own map). The dataset's traces name those files; the fleet
    report says /README.TXT was read by every traced image and /big.bin by one, where
    /README.TXT sits on each image, and each image's bytes per kind as reports.tables.space
    counts them on its own map; the HTML renders offline in Chromium."""
    from reports.tables import space
    from tests.reports.test_html import Opened, _table_rows

    names = ["fat12", "fat16", "fat32"]
    logs = tmp_path / "logs"
    logs.mkdir()
    own = {}
    for name in names:
        frame = own_map([str(fleet["folder"] / f"{name}.img")], tmp_path)
        own[name] = frame
        wanted = ["/README.TXT"] + (["/big.bin"] if name == "fat32" else [])
        ranges = [
            (int(s), int(e))
            for p in wanted
            for s, e in zip(
                frame.loc[frame["path"] == p, "start"], frame.loc[frame["path"] == p, "end"]
            )
        ]
        (logs / f"{name}.csv").write_text(_log_reading(ranges))
    picked = [str(fleet["folder"] / f"{n}.img") for n in [*names, "whole-disk-ext4"]]
    out = tmp_path / "dataset"
    code, err = run_cli(
        ["batch", *picked, "--out", str(out), "--workers", "2", "--trace", str(logs)]
    )
    assert code in (0, 3), err
    assert "3 boot log(s) annotated" in err
    table = read_image_table(out).set_index("image")
    assert table.loc["whole-disk-ext4", "trace"] == ""
    for name in names:
        assert table.loc[name, "trace"] == str(logs / f"{name}.csv")
        readme = own[name][own[name]["path"] == "/README.TXT"]
        big = own[name][own[name]["path"] == "/big.bin"] if name == "fat32" else readme.iloc[:0]
        assert table.loc[name, "requests"] == len(readme) + len(big)
    from bmap.fleet.batch import read_traces

    reads = read_traces(out)
    read_paths = reads[reads["type"] == "f"].groupby("image")["path"].agg(set)
    assert read_paths["fat12"] == {"/README.TXT"} and read_paths["fat32"] == {
        "/README.TXT",
        "/big.bin",
    }
    # The fleet report.
    csv_dir = tmp_path / "csv"
    html = tmp_path / "fleet.html"
    code, err = run_cli(
        ["fleet", str(out), "--csv", str(csv_dir), "-o", str(html), "--path", "/README.TXT"]
    )
    assert code == 0, err
    boot = pd.read_csv(csv_dir / "boot_files.csv").set_index("path")
    assert boot.loc["/README.TXT", "images"] == 3 and bool(boot.loc["/README.TXT", "every"])
    assert boot.loc["/big.bin", "images"] == 1 and not bool(boot.loc["/big.bin", "every"])
    where = pd.read_csv(csv_dir / "where.csv")
    for name in names:
        mine = where[where["image"] == name]
        want = own[name][own[name]["path"] == "/README.TXT"]
        assert sorted(mine["start"]) == sorted(want["start"].astype(int))
    per_kind = pd.read_csv(csv_dir / "space_by_kind.csv").set_index(["type", "kind"])
    for name in [*names, "whole-disk-ext4"]:
        frame = read_dataset(out, [name]).drop(columns="image")
        truth = space(frame)
        truth = truth[(truth["type"] != "") & ~truth["type"].isin(["v", "p", "l"])]
        for (t, k), b in truth.groupby(["type", "kind"])["bytes"].sum().items():
            assert per_kind.loc[(t, k), name] == b, (name, t, k)
    opened = Opened(browser, html)
    try:
        opened.check_clean()
        headings = opened.page.eval_on_selector_all("h3", "hs => hs.map(h => h.textContent)")
        assert any("boot" in h for h in headings)
        rows = _table_rows(opened.page, "#table-3")
        assert any(r and r[0] == "/README.TXT" for r in rows)
    finally:
        opened.page.close()


def test_a_damaged_dataset_is_exit_6(fleet, tmp_path):
    """A map partition, the image table or a trace partition overwritten with garbage: one
    line and exit 6 from bmap fleet, never a traceback."""
    out = tmp_path / "dataset"
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "gpt-512.csv").write_text("0,512\n")
    image = str(fleet["folder"] / "gpt-512.img")
    code, err = run_cli(["batch", image, "--out", str(out), "--workers", "1", "--trace", str(logs)])
    assert code in (0, 3), err
    for victim in (
        out / "map" / "image=gpt-512" / "part-0.parquet",
        out / "trace" / "image=gpt-512" / "part-0.parquet",
        out / "images.parquet",
    ):
        saved = victim.read_bytes()
        victim.write_bytes(b"PAR1" + bytes(range(256)) * 4 + b"PAR1")
        code, err = run_cli(["fleet", str(out), "--csv", str(tmp_path / "csv")])
        assert code == 6, (victim, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        victim.write_bytes(saved)
    code, err = run_cli(["fleet", str(tmp_path), "--csv", str(tmp_path / "csv")])
    assert code == 6 and "not a bmap batch dataset" in err


def test_a_worker_that_dies_is_a_row_and_the_batch_goes_on(fleet, tmp_path):
    """The worker mapping zero.img ends (as the nanny ends one past its memory): that entry is
    a row saying the task did not finish, the others are mapped, and the image table is
    written."""
    import dask

    from bmap.fleet.batch import Options, run_batch
    from tests.bmap.fleet.dying import die_on_zero

    picked = [str(fleet["folder"] / n) for n in ("gpt-512.img", "zero.img", "fat16.img")]
    out = tmp_path / "dataset"
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        result = run_batch(
            entries_from(picked), Options(str(out), 1 << 30), workers=2, task=die_on_zero
        )
    rows = {r["image"]: r for r in result.rows}
    assert "did not finish" in rows["zero"]["error"] and rows["zero"]["exit"] == 1
    assert rows["gpt-512"]["error"] == "" and rows["fat16"]["error"] == ""
    table = read_image_table(out)
    assert list(table["image"]) == ["gpt-512", "zero", "fat16"]
    assert set(read_dataset(out)["image"]) == {"gpt-512", "fat16"}
