"""On-disk format parsers: one module (or subpackage) per format, on construct, numpy and the
standard library.

This package is a leaf: it imports nothing else of the project. Every parser reads from a
readable, seekable file-like object and never opens a path. Content detection is one table of
probes (:data:`parsers.detect.PROBES`), each probe beside its format's own structures.
"""
