"""Reports over block maps: pandas DataFrames in, CSV / HTML out.

A leaf package: it imports nothing of the project and takes the documented map columns
(docs/format.md) as its input. Filled by a later issue.
"""
