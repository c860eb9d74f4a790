"""Content detection: what a partition (or a whole disk, or an LV) holds, by signature.

``detect(fh, size)`` answers the question ``blkid -p`` answers (TYPE, VERSION, LABEL, UUID)
and adds the size that the content claims for itself. It reads only superblocks and the few
sectors a label lives in, never the whole device: every probe reads through one
:class:`~parsers.probe.ProbeReader`, whose budget bounds the reads of all of them together.

The probes are one table, :data:`PROBES`, one line per format; each probe lives beside its
format's own structures. They run in the order libblkid runs them, so that a volume whose old
signatures were left underneath (a LUKS or LVM header written over a file system, say) is named
as blkid names it: LVM2 and LUKS first, then vfat, swap, XFS, ext, ISO9660, HFS+, UFS, NTFS,
btrfs and exFAT. Where blkid would report an "ambivalent result" (two file system signatures) we
answer with the first.

What each probe accepts and how it words LABEL, UUID and VERSION follow libblkid, checked
against ``blkid -p -o export`` on images made by the real tools (tests/parsers/test_detect.py):
https://github.com/util-linux/util-linux/tree/master/libblkid/src/superblocks

:data:`RESCUE_PROBES` go further than blkid, and only when every probe failed: a filesystem
whose primary superblock is damaged is still recognised by a backup copy
(:func:`detect` with ``rescue=True``).

Adding a format: a ``probe(dev: ProbeReader) -> Content`` beside its structures, and one line
in :data:`PROBES` at the place libblkid gives it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import construct as cs

from parsers import btrfs, exfat, fat, hfsplus, iso9660, luks, ntfs, swap, ufs, xfs
from parsers.errors import ParserError
from parsers.ext import probe as ext_probe
from parsers.lvm2 import label as lvm2_label
from parsers.probe import MIN_DEVICE, READ_BUDGET, UNKNOWN, Content, ProbeReader
from parsers.stream import ReadSeek

__all__ = ["PROBES", "READ_BUDGET", "RESCUE_PROBES", "UNKNOWN", "Content", "detect"]

logger = logging.getLogger(__name__)

Probe = Callable[[ProbeReader], Content]
"""Says what the device holds, or raises a ParserError (NotThisFormat when it is not there)."""

#: The probes in libblkid's order: volume managers and encryption first, since their headers
#: may sit over stale file system signatures; then the file systems.
PROBES: tuple[tuple[str, Probe], ...] = (
    ("LVM2_member", lvm2_label.probe),
    ("crypto_LUKS", luks.probe),
    ("vfat", fat.probe),
    ("swap", swap.probe),
    ("xfs", xfs.probe),
    ("ext", ext_probe.probe),
    ("iso9660", iso9660.probe),
    ("hfsplus", hfsplus.probe),
    ("ufs", ufs.probe),
    ("ntfs", ntfs.probe),
    ("btrfs", btrfs.probe),
    ("exfat", exfat.probe),
)

Rescue = Callable[[ReadSeek, int], Content]
"""Finds a damaged format by a copy of its structures; reads what it needs, not bounded by
:data:`READ_BUDGET`, and raises a ParserError where it finds nothing."""

#: Tried in order, only with ``rescue=True`` and only when every probe failed.
RESCUE_PROBES: tuple[tuple[str, Rescue], ...] = (("ext", ext_probe.probe_backup_superblock),)


def detect(fh: ReadSeek, size: int, *, rescue: bool = False) -> Content:
    """Say what the device in ``fh`` holds, by the signatures blkid looks for.

    Args:
        fh: a readable, seekable stream whose position 0 is the start of the device. Its
            position is moved.
        size: the size of the device in bytes; nothing at or past it is read, and a format
            whose structures do not fit is not there.
        rescue: when no probe recognises the device, try :data:`RESCUE_PROBES`.

    Returns:
        The first format whose checks pass, in libblkid's order, or ``UNKNOWN``. Garbage,
        zeros and truncated images give ``UNKNOWN``; only a failing stream (an ``OSError``
        from ``fh``) raises. The probes read at most ``READ_BUDGET`` bytes.
    """
    if size < MIN_DEVICE:
        return UNKNOWN
    dev = ProbeReader(fh, size)
    for name, probe in PROBES:
        try:
            return probe(dev)
        except (ParserError, cs.ConstructError) as error:
            logger.debug("%s: %s", name, error)
    if rescue:
        for name, rescue_probe in RESCUE_PROBES:
            try:
                return rescue_probe(fh, size)
            except ParserError as error:
                logger.debug("%s (rescue): %s", name, error)
    return UNKNOWN
