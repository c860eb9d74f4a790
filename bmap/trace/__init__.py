"""Trace replay: name the objects behind the blocks a virtual machine reads.

log -> :mod:`~bmap.trace.logs` (the table of log formats: :mod:`~bmap.trace.nbdkit` with its
numpy scanner :mod:`~bmap.trace.nbdkitscan`, :mod:`~bmap.trace.qemu`,
:mod:`~bmap.trace.blkparse`, :mod:`~bmap.trace.csvlog`; requests as columns,
:mod:`~bmap.trace.requests`) -> :mod:`~bmap.trace.annotate` (requests cut over the map's
objects, coalesced into records) -> :mod:`~bmap.trace.output` (text, CSV, JSON lines,
summaries). An nbdkit log file is worked on in a child process (:mod:`~bmap.trace.logjob` over
:mod:`~bmap.trace.worker`); :mod:`~bmap.trace.serve` runs the real nbdkit for a live trace.

This package uses :mod:`bmap.model` and :mod:`bmap.store`: it reads maps, it never makes one.
"""
