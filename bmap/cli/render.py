"""Text and JSON views of a discovered layout and of lookup answers, for the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bmap.layers.mapper import gaps
from bmap.layers.partitions import Disk, Partition
from bmap.model.escape import escape, printable
from bmap.model.units import human_size
from parsers.probe import Content

if TYPE_CHECKING:
    from bmap.images.containers import ContainerInfo
    from bmap.layers.lvm import LVView, VGView


def content_text(content: Content | None) -> str:
    if content is None:
        return ""
    words = [content.kind]
    if content.version:
        words.append(content.version)
    if content.label:
        words.append(f'label="{escape(content.label)}"')
    if content.uuid:
        words.append(f"uuid={content.uuid}")
    return " ".join(words)


def filesystem_lines(fs: dict[str, Any] | None, indent: str) -> list[str]:
    """What a content mapper's ``describe`` said: for ext, two lines (sizes and counts, then
    its features); for the others, one line of their facts, and their features if any."""
    if not fs:
        return []
    if not {"blocks", "free_blocks", "block_size", "inodes", "free_inodes", "groups"} <= fs.keys():
        return _facts_lines(fs, indent)
    used = fs["blocks"] - fs["free_blocks"]
    cluster = (
        f", {fs['cluster_size']}-byte clusters" if fs["cluster_size"] != fs["block_size"] else ""
    )
    return [
        f"{indent}{fs['type']}: {fs['blocks']} blocks of {fs['block_size']} bytes{cluster} "
        f"({human_size(fs['size'])}), used {human_size(used * fs['block_size'])}, free "
        f"{human_size(fs['free_blocks'] * fs['block_size'])}; {fs['inodes']} inodes, "
        f"{fs['inodes'] - fs['free_inodes']} used; {fs['groups']} groups",
        f"{indent}features: {' '.join(fs['features'])}",
    ]


def _facts_lines(fs: dict[str, Any], indent: str) -> list[str]:
    """``TYPE: key value, key value, ...`` from any description, in its own order; sizes in
    bytes (keys ending in ``size`` or ``_bytes``) shown human-readable, offsets in hex, lists
    joined, empty values left out."""
    facts = []
    for key, value in fs.items():
        if key in ("type", "features") or value is None or value == [] or value == "":
            continue
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and key.endswith(("size", "offset", "_bytes"))
        ):
            shown = f"{value:#x}" if key.endswith("offset") else human_size(value)
            key = key.removesuffix("_bytes")
        elif isinstance(value, (list, tuple)):
            shown = ",".join(str(v) for v in value)
        else:
            shown = str(value)
        facts.append(f"{key.replace('_', ' ')} {printable(shown)}")
    lines = [f"{indent}{printable(str(fs.get('type', '?')))}: {', '.join(facts)}"]
    if fs.get("features"):
        lines.append(f"{indent}features: {printable(' '.join(map(str, fs['features'])))}")
    return lines


def content_dict(content: Content | None) -> dict[str, Any] | None:
    if content is None:
        return None
    return {
        "kind": content.kind,
        "version": content.version,
        "label": content.label,
        "uuid": content.uuid,
        "fs_size": content.fs_size,
    }


def _table_text(disk: Disk) -> str:
    if disk.scheme == "gpt":
        source = "" if disk.table_source == "primary" else f", from the {disk.table_source} header"
        return f"GPT, {disk.sector_size}-byte sectors, disk GUID {disk.disk_id}{source}"
    if disk.scheme == "mbr":
        return f"MBR (DOS), {disk.sector_size}-byte sectors, disk id {disk.disk_id}"
    return "no partition table"


def container_lines(info: ContainerInfo | None) -> list[str]:
    """What holds the disk, for a container (nothing for a raw image): its format, virtual and
    file size, allocation unit, compression, the files under it and its own facts."""
    if info is None:
        return []
    head = (
        f"   container: {info.format}, virtual size {human_size(info.virtual_size)} "
        f"({info.virtual_size} bytes), file {human_size(info.file_size)}"
    )
    if info.cluster_size:
        head += f", {human_size(info.cluster_size)} clusters"
    if info.compression:
        head += f", compression {info.compression}"
    lines = [head]
    for depth, link in enumerate(info.chain, start=1):
        lines.append(f"   {link.role} {depth}: {escape(link.path)} ({link.format})")
    for key, value in info.details.items():
        lines.append(f"   {key}: {escape(str(value))}")
    return lines


def container_dict(info: ContainerInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    return {
        "format": info.format,
        "virtual_size": info.virtual_size,
        "file_size": info.file_size,
        "cluster_size": info.cluster_size,
        "compression": info.compression,
        "chain": [{"role": c.role, "path": c.path, "format": c.format} for c in info.chain],
        "details": dict(info.details),
    }


def disk_tree(disk: Disk, show_all: bool = False) -> list[str]:
    """The layout of one disk as a tree, like ``mmls`` and ``virt-filesystems --long``.

    With ``show_all``, the table structures and the unpartitioned gaps are rows too. Names,
    labels and UUIDs come from the image: no control character of theirs reaches the lines.
    """
    return [printable(line) for line in _disk_tree(disk, show_all)]


def _disk_tree(disk: Disk, show_all: bool) -> list[str]:
    lines = [
        f"{disk.device}  {escape(str(disk.image.path))}  {human_size(disk.size)} "
        f"({disk.size} bytes)  {_table_text(disk)}"
    ]
    lines += container_lines(disk.image.container)
    if disk.scheme == "none":
        lines.append(f"└─ content: {content_text(disk.content) or 'unknown'}")
        lines += filesystem_lines(disk.filesystem, "   ")
        return lines
    rows: list[tuple[int, int, list[str]]] = []  # (offset, depth, cells)
    ss = disk.sector_size
    for p in disk.partitions:
        depth = 1 if p.is_logical else 0
        kind = "extended" if p.is_extended else (p.type_name if p.type_name else p.type_id)
        name = f'"{escape(p.name)}"' if p.name else ""
        flags = "boot" if p.bootable else ""
        cells = [
            p.device,
            f"{p.offset:#x}",
            f"{p.offset // ss}-{(p.offset + p.size) // ss - 1}",
            human_size(p.size),
            kind,
            name,
            flags,
            content_text(p.content),
        ]
        rows.append((p.offset, depth, cells))
    if show_all:
        for s in disk.structures:
            depth = 0 if s.device == disk.device else 1
            cells = [
                f"({s.kind})",
                f"{s.offset:#x}",
                f"{s.offset // ss}-{(s.offset + s.size - 1) // ss}",
                human_size(s.size),
                "table structure",
                "",
                "",
                "",
            ]
            rows.append((s.offset, depth, cells))
        for device, lo, hi, depth in _containers(disk):
            parent = None if device == disk.device else device
            used = [(s.offset, s.offset + s.size) for s in disk.structures if s.device == device]
            used += [(q.offset, q.end) for q in disk.partitions if q.parent == parent]
            for a, b in gaps(lo, hi, used):
                cells = [
                    "(free)",
                    f"{a:#x}",
                    f"{a // ss}-{(b - 1) // ss}",
                    human_size(b - a),
                    "unpartitioned",
                    "",
                    "",
                    "",
                ]
                rows.append((a, depth, cells))
    rows.sort(key=lambda r: (r[0], r[1]))
    # Logical rows must follow their extended partition: order by (container offset, offset).
    rows.sort(key=lambda r: (_top_offset(disk, r), r[1], r[0]))
    header = ["DEVICE", "START", "SECTORS", "SIZE", "TYPE", "NAME", "FLAGS", "CONTENT"]
    prefixes = _branches([depth for _, depth, _ in rows])
    table = [("   ", header)] + [(pre, cells) for pre, (_, _, cells) in zip(prefixes, rows)]
    widths = [max(len(pre) + len(cells[0]) for pre, cells in table)]
    widths += [max(len(cells[i]) for _, cells in table) for i in range(1, len(header))]
    fs_of = {p.device: p.filesystem for p in disk.partitions}
    for pre, cells in table:
        first = (pre + cells[0]).ljust(widths[0])
        rest = "  ".join(c.ljust(w) for c, w in zip(cells[1:], widths[1:]))
        lines.append((first + "  " + rest).rstrip())
        indent = pre.replace("├─ ", "│  ").replace("└─ ", "   ") + "   "
        lines += filesystem_lines(fs_of.get(cells[0]), indent)
    return lines


def _branches(depths: list[int]) -> list[str]:
    """Tree prefixes for rows at depth 0 or 1 (logical partitions under their extended one)."""
    prefixes = []
    for i, depth in enumerate(depths):
        later = depths[i + 1 :]
        if depth == 0:
            last = 0 not in later
            prefixes.append("└─ " if last else "├─ ")
        else:
            parent_last = 0 not in later
            last = not later or later[0] == 0
            prefixes.append(("   " if parent_last else "│  ") + ("└─ " if last else "├─ "))
    return prefixes


def _containers(disk: Disk) -> list[tuple[str, int, int, int]]:
    result = [(disk.device, 0, disk.size, 0)]
    result += [
        (p.device, p.offset, p.offset + p.mapped_size, 1) for p in disk.partitions if p.is_extended
    ]
    return result


def _top_offset(disk: Disk, row: tuple[int, int, list[str]]) -> int:
    """The offset of the top-level row a row sorts under (itself, or its extended partition)."""
    offset, depth, _ = row
    if depth == 0:
        return offset
    for p in disk.partitions:
        if p.is_extended and p.offset <= offset < p.offset + max(p.size, 1):
            return p.offset
    return offset


def partition_dict(p: Partition, sector_size: int) -> dict[str, Any]:
    return {
        "number": p.number,
        "device": p.device,
        "start": p.offset,
        "size": p.size,
        "end": p.end,
        "mapped_size": p.mapped_size,
        "start_sector": p.offset // sector_size,
        "sectors": p.size // sector_size,
        "type": p.type_id,
        "type_name": p.type_name,
        "name": p.name,
        "uuid": p.uuid,
        "bootable": p.bootable,
        "attributes": p.attributes,
        "extended": p.is_extended,
        "logical": p.is_logical,
        "parent": p.parent,
        "content": content_dict(p.content),
        "filesystem": p.filesystem,
    }


def disk_dict(disk: Disk) -> dict[str, Any]:
    return {
        "number": disk.number,
        "image": str(disk.image.path),
        "format": disk.image.format,
        "container": container_dict(disk.image.container),
        "device": disk.device,
        "size": disk.size,
        "sector_size": disk.sector_size,
        "table": None
        if disk.scheme == "none"
        else {
            "type": disk.scheme,
            "id": disk.disk_id,
            "source": disk.table_source,
            "first_usable": disk.gpt_first_usable,
            "last_usable": disk.gpt_last_usable,
        },
        "content": content_dict(disk.content),
        "filesystem": disk.filesystem,
        "partitions": [partition_dict(p, disk.sector_size) for p in disk.partitions],
        "structures": [
            {"kind": s.kind, "device": s.device, "start": s.offset, "size": s.size}
            for s in disk.structures
        ],
        "findings": [
            {
                "severity": str(f.severity),
                "disk": f.disk,
                "offset": f.offset,
                "source": f.source,
                "message": f.message,
            }
            for f in disk.findings
        ],
    }


def hits_table(rows: Sequence[tuple[str, str, str]]) -> list[str]:
    if not rows:
        return []
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return [f"  {a.ljust(w0)}  {b.ljust(w1)}  {c}".rstrip() for a, b, c in rows]


def _lv_content(lv: LVView) -> Content | None:
    from bmap.layers.content import detect_content
    from bmap.layers.lvm import lv_stream

    if not lv.complete or not lv.content_pieces or lv.size == 0:
        return None
    return detect_content(lv_stream(lv), lv.size)


def _segments_text(view: VGView, lv: LVView) -> list[str]:
    from bmap.layers.lvm import display_type

    es = view.vg.extent_size
    out = []
    for seg in lv.lv.segments:
        first, last = seg.start_extent, seg.start_extent + seg.extent_count - 1
        per_stripe = seg.extent_count // max(len(seg.stripes), 1)
        where = ", ".join(
            f"{s.pv}:{s.start_extent}-{s.start_extent + per_stripe - 1}"
            if s.pv in view.pvs
            else s.pv
            for s in seg.stripes
        )
        stripes = (
            f" {len(seg.stripes)} stripes of {human_size(seg.stripe_size)}"
            if seg.type == "striped" and len(seg.stripes) > 1
            else ""
        )
        out.append(
            f"extents {first}-{last} ({human_size(seg.extent_count * es)}): "
            f"{display_type(seg)}{stripes}"
            f" on {where or '-'}"
        )
    return out


def vg_tree(view: VGView) -> list[str]:
    """A volume group as a tree: its PVs (which image, which partition), then its LVs with
    size, segment types, segments and content (names from the metadata made printable)."""
    return [printable(line) for line in _vg_tree(view)]


def _vg_tree(view: VGView) -> list[str]:
    vg = view.vg
    lines = [
        f"VG {vg.name}  uuid {vg.uuid}  extent size {human_size(vg.extent_size)}, seqno "
        f"{vg.seqno}, {len(vg.pvs)} PV(s), {len(vg.lvs)} LV(s)"
    ]
    items: list[tuple[str, list[str]]] = []
    for ref in vg.pvs:
        pv = view.pvs.get(ref.name)
        if pv is None:
            items.append((f"PV {ref.name}  MISSING (last seen as {ref.device_hint})", []))
        else:
            items.append(
                (
                    f"PV {ref.name}  {pv.device} on {escape(str(pv.disk.image.path))}  "
                    f"pe_start {human_size(ref.pe_start)}, {ref.pe_count} extents  uuid {ref.uuid}",
                    [],
                )
            )
    for lv in view.lvs:
        hidden = "" if lv.lv.visible else " (hidden)"
        content = content_text(_lv_content(lv)) or ("not placed" if not lv.complete else "unknown")
        items.append(
            (
                f"LV {lv.device}{hidden}  {human_size(lv.size)}  "
                f"{'+'.join(dict.fromkeys(lv.types)) or '-'}  {content}",
                _segments_text(view, lv),
            )
        )
    for i, (head, subs) in enumerate(items):
        last = i == len(items) - 1
        lines.append(("└─ " if last else "├─ ") + head)
        for sub in subs:
            lines.append(("   " if last else "│  ") + "   " + sub)
    return lines


def vg_dict(view: VGView) -> dict[str, Any]:
    vg = view.vg
    return {
        "name": vg.name,
        "uuid": vg.uuid,
        "seqno": vg.seqno,
        "extent_size": vg.extent_size,
        "pvs": [
            {
                "name": ref.name,
                "uuid": ref.uuid,
                "pe_start": ref.pe_start,
                "pe_count": ref.pe_count,
                "device": None if pv is None else pv.device,
                "disk": None if pv is None else pv.disk.number,
                "image": None if pv is None else str(pv.disk.image.path),
            }
            for ref, pv in ((ref, view.pvs.get(ref.name)) for ref in vg.pvs)
        ],
        "lvs": [
            {
                "name": lv.lv.name,
                "device": lv.device,
                "size": lv.size,
                "visible": lv.lv.visible,
                "complete": lv.complete,
                "types": lv.types,
                "segments": [
                    {
                        "start_extent": s.start_extent,
                        "extent_count": s.extent_count,
                        "type": s.type,
                        "stripe_size": s.stripe_size,
                        "stripes": [[st.pv, st.start_extent] for st in s.stripes],
                    }
                    for s in lv.lv.segments
                ],
                "content": content_dict(_lv_content(lv)),
            }
            for lv in view.lvs
        ],
    }
