"""Tiled storage and graphs: tile geometry, the write-once checkpoints on disk, the kernel store
and the Dask graph of kernel tiles.

Layer 3 of the package (``wkdist.engine`` below, ``wkdist.krr`` above).
"""

__all__: list[str] = []
