"""Crafted hostile inputs (valid checksums, absurd contents) and the harness that runs bmap on
each of them in a subprocess (``test_crafted.py``)."""
