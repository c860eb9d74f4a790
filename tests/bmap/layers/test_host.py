"""``bmap map --host``: where each guest object's bytes sit in the qcow2 file and its backing
files, checked against ``qemu-img map`` and against the bytes themselves."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from bmap.errors import ContainerError, ExitCode
from bmap.images import open_image, open_images
from bmap.layers.host import host_map
from bmap.layers.mapper import map_images
from bmap.model.blockmap import TYPE_CODE
from bmap.store.mapfile import read_map
from tests.bmap.cli.test_cli import one_line_error, run
from tests.conftest import sha256_file

pytestmark = pytest.mark.skipif(
    shutil.which("qemu-img") is None or shutil.which("qemu-io") is None,
    reason="qemu-img and qemu-io are needed (Debian: qemu-utils)",
)


def qemu_img(*args: str) -> str:
    done = subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True)
    return done.stdout


def qemu_io(image: Path, *commands: str) -> None:
    args = [a for c in commands for a in ("-c", c)]
    subprocess.run(["qemu-io", "-f", "qcow2", *args, str(image)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, samples_dir):
    """A three-level chain over the GPT sample: base (a plain convert), mid (a write and a
    zero write inside /data/big.bin), top (a write over part of mid's)."""
    out = tmp_path_factory.mktemp("host")
    raw = samples_dir / "gpt-512.img"
    base, mid, top = out / "base.qcow2", out / "mid.qcow2", out / "top.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(base))
    qemu_img("create", "-q", "-f", "qcow2", "-b", base.name, "-F", "qcow2", str(mid))
    qemu_io(mid, "write -P 0xaa 0xae0000 0x20000", "write -z 0xb00000 0x10000")
    qemu_img("create", "-q", "-f", "qcow2", "-b", mid.name, "-F", "qcow2", str(top))
    qemu_io(top, "write -P 0xbb 0xaf0000 0x10000")
    flat = out / "flat.img"
    qemu_img("convert", "-O", "raw", str(top), str(flat))
    return {"raw": raw, "base": base, "mid": mid, "top": top, "flat": flat}


def _qemu_data_runs(image: Path) -> set[tuple[int, int, int, int]]:
    """``(guest_start, guest_end, depth, host_offset)`` of every stored uncompressed range."""
    runs = set()
    for entry in json.loads(qemu_img("map", "--output=json", str(image))):
        if entry["data"] and "offset" in entry:
            start = entry["start"]
            runs.add((start, start + entry["length"], entry["depth"], entry["offset"]))
    return runs


def _merge(runs):
    """Adjacent runs that continue each other (guest and host) as one."""
    out: list[list[int]] = []
    for gs, ge, depth, host in sorted(runs):
        if (
            out
            and out[-1][1] == gs
            and out[-1][2] == depth
            and out[-1][3] + (gs - out[-1][0]) == host
        ):
            out[-1][1] = ge
        else:
            out.append([gs, ge, depth, host])
    return {tuple(r) for r in out}


def _host(images):
    opened = open_images(images)
    try:
        return host_map(map_images(opened), opened), map_images(opened)
    finally:
        for image in opened:
            image.close()


def test_guest_data_runs_are_qemu_img_maps(chain):
    host, _ = _host([chain["top"]])
    files = {info.number: Path(info.path).name for info in host.images}
    assert sorted(files.values()) == ["base.qcow2", "mid.qcow2", "top.qcow2"]
    depth_of = {
        n: ["top.qcow2", "mid.qcow2", "base.qcow2"].index(name) for n, name in files.items()
    }
    frame = host.to_dataframe()
    data = frame[(frame["type"] == "m") & (frame["kind"] == "guest-data")]
    ours = {
        (
            int(r.file_offset),
            int(r.file_offset) + int(r.end - r.start),
            depth_of[r.disk],
            int(r.start),
        )
        for r in data.itertuples()
    }
    assert _merge(ours) == _merge(_qemu_data_runs(chain["top"]))


def test_every_file_line_sits_on_the_bytes_of_its_guest_range(chain):
    """Read each file's and directory's host ranges from the container files: they are the
    bytes the guest reads at the same place (from qemu-img's flattened copy)."""
    host, guest = _host([chain["top"]])
    paths = {info.number: info.path for info in host.images}
    flat = chain["flat"].read_bytes()
    files = {n: Path(p).read_bytes() for n, p in paths.items()}
    gframe = guest.to_dataframe()
    hframe = host.to_dataframe()
    checked = 0
    for kind in ("f", "d"):
        hlines = hframe[hframe["type"] == kind]
        assert len(hlines) >= len(gframe[gframe["type"] == kind])
        for r in hlines.itertuples():
            # file_offset is the offset in the object; the guest line of the same object and
            # offset gives the guest place of these bytes.
            g = gframe[(gframe["type"] == kind) & (gframe["path"] == r.path)]
            hit = g[
                (g["file_offset"] <= r.file_offset)
                & (g["file_offset"] + g["end"] - g["start"] > r.file_offset)
            ]
            assert len(hit) == 1, (r, g)
            gstart = int(hit.iloc[0].start + (r.file_offset - hit.iloc[0].file_offset))
            length = int(r.end - r.start)
            assert files[r.disk][r.start : r.end] == flat[gstart : gstart + length], r
            checked += 1
    assert checked > 10


def test_the_file_is_covered_once_by_structures_data_and_unreferenced_bytes(chain):
    host, _ = _host([chain["top"]])
    mask = (host.type_code == TYPE_CODE["m"]) | (host.type_code == TYPE_CODE["u"])
    frame = host.to_dataframe()[mask]
    frame = frame[frame["kind"] != "guest-data"].copy()
    frame = frame[~frame["device"].str.startswith("/dev/")]
    for info in host.images:
        mine = frame[frame["disk"] == info.number].sort_values("start")
        data = host.to_dataframe()
        data = data[(data["disk"] == info.number) & (data["kind"] == "guest-data")]
        pieces = sorted(
            list(zip(mine["start"], mine["end"])) + list(zip(data["start"], data["end"]))
        )
        pos = 0
        for start, end in pieces:
            assert start == pos, (info.path, start, pos)
            pos = end
        assert pos == info.size


def test_structures_are_where_the_header_says(chain):
    host, _ = _host([chain["top"]])
    frame = host.to_dataframe()
    for info in host.images:
        raw = Path(info.path).read_bytes()
        (l1_size,) = struct.unpack_from(">I", raw, 36)
        (l1_offset, refcount_offset) = struct.unpack_from(">QQ", raw, 40)
        cluster = 1 << struct.unpack_from(">I", raw, 20)[0]
        mine = frame[frame["disk"] == info.number]
        header = mine[mine["kind"] == "qcow2-header"]
        assert (int(header.iloc[0].start), int(header.iloc[0].end)) == (0, cluster)
        l1 = mine[mine["kind"] == "l1-table"]
        assert int(l1.iloc[0].start) == l1_offset
        assert int(l1.iloc[0].end) - l1_offset >= l1_size * 8
        assert refcount_offset in set(mine[mine["kind"] == "refcount-table"]["start"].tolist())
        assert len(mine[mine["kind"] == "l2-table"]) >= 1


def test_compressed_clusters_are_named_and_inflate_to_the_guest_bytes(samples_dir, tmp_path):
    raw = samples_dir / "gpt-512.img"
    image = tmp_path / "c.qcow2"
    qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(image))
    host, _ = _host([image])
    frame = host.to_dataframe()
    packed = frame[frame["kind"] == "compressed-cluster"]
    assert len(packed) > 10
    data = image.read_bytes()
    disk = raw.read_bytes()
    cluster = 1 << struct.unpack_from(">I", data, 20)[0]
    for r in packed.itertuples():
        stored = data[r.start : r.end]
        inflated = zlib.decompressobj(-12).decompress(stored, cluster)
        want = disk[r.file_offset : r.file_offset + cluster]
        assert inflated[: len(want)] == want
    # qemu-img gives compressed ranges no offset: exactly those are ours.
    theirs = {
        (e["start"], e["start"] + e["length"])
        for e in json.loads(qemu_img("map", "--output=json", str(image)))
        if e["data"] and "offset" not in e
    }
    covered = sorted(
        (int(r.file_offset), int(r.file_offset) + cluster) for r in packed.itertuples()
    )
    merged: list[list[int]] = []
    for a, b in covered:
        if merged and merged[-1][1] == a:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    assert [tuple(m) for m in merged] == sorted(theirs)


def test_the_cli_writes_the_host_map_and_leaves_the_chain_untouched(chain, tmp_path):
    before = {k: sha256_file(chain[k]) for k in ("base", "mid", "top")}
    out = tmp_path / "top.host.bmap"
    result = run("map", chain["top"], "--host", "-o", out)
    assert result.exit_code == 0, result.stderr
    text = out.read_text()
    assert "# image 1 " in text and "format=qcow2" in text
    frame = read_map(out)
    assert set(frame["disk"].unique().tolist()) == {1, 2, 3}
    assert {k: sha256_file(chain[k]) for k in ("base", "mid", "top")} == before


def test_host_of_a_reader_that_cannot_say_is_one_clear_error(samples_dir, tmp_path):
    image = tmp_path / "d.vmdk"
    qemu_img("convert", "-f", "raw", "-O", "vmdk", str(samples_dir / "gpt-512.img"), str(image))
    with open_image(image) as disk, pytest.raises(ContainerError, match="--host"):
        host_map(map_images([disk]), [disk])
    result = run("map", image, "--host", "-o", tmp_path / "x.bmap")
    assert result.exit_code == ExitCode.CONTAINER
    one_line_error(result, "--host", "vmdk")


def test_a_raw_image_is_its_own_host(samples_dir):
    host, guest = _host([samples_dir / "gpt-512.img"])
    keep = host.type_code != TYPE_CODE["v"]
    g = guest.type_code != TYPE_CODE["v"]
    frame = host.to_dataframe()[keep]
    frame = frame[frame["kind"] != "guest-data"]
    gframe = guest.to_dataframe()[g]
    cols = ["start", "end", "type", "device", "kind", "path"]
    assert np.array_equal(frame[cols].to_numpy(), gframe[cols].to_numpy())


def test_the_map_of_a_chain_is_the_flat_disks_with_its_chain_in_the_header(chain, tmp_path):
    """The virtual-disk map of the top image equals the map of qemu-img's flattened copy,
    line for line; only the header says what held the disk."""
    top, flat = tmp_path / "top.bmap", tmp_path / "flat.bmap"
    assert run("map", chain["top"], "-o", top).exit_code == 0
    assert run("map", chain["flat"], "-o", flat).exit_code == 0
    body = [line for line in top.read_text().splitlines() if not line.startswith("#")]
    assert body == [line for line in flat.read_text().splitlines() if not line.startswith("#")]
    header = [
        line
        for line in top.read_text().splitlines()
        if line.startswith("# image") or line.startswith("# chain")
    ]
    assert header == [
        f"# image 1 {chain['top']} size=0x2000000 format=qcow2",
        f"# chain 1 backing qcow2 {chain['mid']}",
        f"# chain 1 backing qcow2 {chain['base']}",
    ]


def test_a_map_is_never_written_over_a_backing_file(chain):
    """The chain's files are inputs too: writing the map over one is refused like the image."""
    before = sha256_file(chain["base"])
    result = run("map", chain["top"], "-o", chain["base"])
    assert result.exit_code == ExitCode.UNREADABLE
    one_line_error(result, str(chain["base"]), "is an input image")
    assert sha256_file(chain["base"]) == before
