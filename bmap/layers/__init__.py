"""What turns an image into map lines, one layer at a time.

- :mod:`~bmap.layers.partitions`: a disk's partition table (MBR with its EBR chain, GPT), its
  partitions in disk coordinates and what each holds (:func:`~bmap.layers.partitions.discover`);
- :mod:`~bmap.layers.content`: content detection and the :class:`~bmap.layers.content.Volume`
  a content mapper maps;
- :mod:`~bmap.layers.registry`: the tables of content mappers and volume managers;
- :mod:`~bmap.layers.ext`, :mod:`~bmap.layers.swap`: content mappers, one module per kind;
- :mod:`~bmap.layers.lvm`: the LVM volume manager;
- :mod:`~bmap.layers.placement`: a device's coordinates to disk coordinates;
- :mod:`~bmap.layers.mapper`: the walk over all of them (:func:`~bmap.layers.mapper.map_images`).

This package uses :mod:`bmap.model`, :mod:`bmap.images` and :mod:`parsers`; it never imports
the map files, the trace or the CLI.
"""
