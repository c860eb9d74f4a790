"""Reports over block maps: pandas DataFrames in, CSV / HTML out.

A leaf package: it imports nothing of the project and takes the documented map columns
(docs/format.md) as its input; the CLI joins it to the rest.

Adding a report: a module in this package with ``write(frames, out) -> list[Path]`` (the map,
the trace and the findings as DataFrames in ``frames``, the files written in ``out``), and one
line in :data:`REPORTS`. Today: ``csv`` (:mod:`reports.csvout`, the tables of
:mod:`reports.tables` as CSV files) and ``html`` (:mod:`reports.html`, one offline page; it
also takes ``meta``: the images, the tool's version and the date).
"""

from __future__ import annotations

#: Report name -> the module that writes it (imported when the report is asked for).
REPORTS: dict[str, str] = {"csv": "reports.csvout", "html": "reports.html"}
