"""On-disk format parsers: one module per format, construct and the standard library only.

This package is a leaf: it imports nothing else of the project. Every parser reads from a
readable, seekable file-like object and never opens a path.
"""
