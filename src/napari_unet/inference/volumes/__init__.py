"""Z stacks with a 2D model: 3D objects from planes (``z_mode``).

:mod:`.zstack` runs ``"3d"`` in memory (YX, ZX and ZY planes averaged, then a 3D watershed),
:mod:`.zlink` makes per-slice ids 3D (``"stitch"`` and ``"slices"``), and :mod:`.blockwise`
runs ``"3d"`` block by block for stacks larger than memory.
"""
