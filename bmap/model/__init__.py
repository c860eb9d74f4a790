"""The block map as columns: what every other part of bmap builds, stores and reads.

- :mod:`~bmap.model.blockmap`: objects and extents as numpy columns, the builder, the finished
  map;
- :mod:`~bmap.model.ids`: an object's ID as the text map writes it, and escaping many at once;
- :mod:`~bmap.model.escape`: the escaping of one ID, and names as bmap keeps them;
- :mod:`~bmap.model.intervals`: sets of half-open intervals and ragged ranges, vectorised;
- :mod:`~bmap.model.textcols`: text assembled from columns without a string per row;
- :mod:`~bmap.model.frame`: the map as a pandas DataFrame with the documented columns;
- :mod:`~bmap.model.units`: sizes for people.

This package imports nothing of bmap but :mod:`bmap.errors`.
"""
