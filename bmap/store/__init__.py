"""Map files in and out, the index, lookup.

- :mod:`~bmap.store.mapfile`: the table of map formats, :func:`~bmap.store.mapfile.write_map`
  and :func:`~bmap.store.mapfile.read_map`; one module per format
  (:mod:`~bmap.store.textmap`, :mod:`~bmap.store.csvmap`, :mod:`~bmap.store.jsonlmap`,
  :mod:`~bmap.store.parquetmap`);
- :mod:`~bmap.store.index`: "what is at this offset?" for many offsets at once;
- :mod:`~bmap.store.lookup`: the answers of ``bmap lookup``.

This package uses :mod:`bmap.model` only: it reads and writes maps, it never makes one.
"""
