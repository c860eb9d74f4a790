"""ext2, ext3 and ext4: structures (``structs``) and the filesystem reader (``filesystem``)."""

from parsers.ext.filesystem import ExtFS, Superblock, parse_superblock

__all__ = ["ExtFS", "Superblock", "parse_superblock"]
