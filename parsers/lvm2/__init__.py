"""LVM2 physical volumes: the label, the PV header, the metadata areas and the metadata text.

References:
- lvm2's ``lib/format_text/layout.h`` and ``lib/label/label.h`` (the on-disk structures);
- lvm2's ``lib/config/config.c`` (the metadata's config language);
- libyal's "Logical Volume Manager (LVM) format" document.

- :mod:`~parsers.lvm2.label`: the ``LABELONE`` label in one of the first four 512-byte
  sectors and the start of the PV header after it; the content probe;
- :mod:`~parsers.lvm2.pv`: the PV header's data and metadata areas, and the metadata records
  in each area's ring buffer (:func:`~parsers.lvm2.pv.read_pv`);
- :mod:`~parsers.lvm2.metadata`: LVM's config language and the volume group a record
  describes (:func:`~parsers.lvm2.metadata.volume_group`).

Content detection imports only the label: the metadata language costs nothing until a PV is
found.
"""
