"""XFS (v4 and v5): structures (``structs``), the filesystem reader (``filesystem``) and the
content probe (``probe``)."""

from parsers.xfs.filesystem import XFS, Superblock, parse_superblock
from parsers.xfs.probe import probe

__all__ = ["XFS", "Superblock", "parse_superblock", "probe"]
