"""Blockwise ``z_mode="3d"``: Z stacks larger than memory segmented into 3D objects.

:mod:`.plan` cuts the volume into blocks (cores that tile it, read with a halo of at least the
network's receptive field and twice the object size), :mod:`.block` segments one block with
the in-memory 3D path, :mod:`.run` writes the blocks' cores (segmented here or, by
:mod:`.cluster`, one task per block on a dask.distributed cluster), and :mod:`.merge` joins
the ids of neighbouring blocks across their faces. Memory is bounded by one block and its
halo.
"""

from .block import BlockResult, label_block
from .merge import FaceMerger, face_pairs
from .plan import Block, BlockPlan, block_halo, check_block, default_block, plan_blocks
from .run import plan_for, run_blockwise

__all__ = [
    "Block",
    "BlockPlan",
    "BlockResult",
    "FaceMerger",
    "block_halo",
    "check_block",
    "default_block",
    "face_pairs",
    "label_block",
    "plan_blocks",
    "plan_for",
    "run_blockwise",
]
