"""dataforge.samplers: class-balanced, weighted, length-bucketed and distributed samplers.

All share one base (:class:`~dataforge.samplers.base.EpochSampler`): an explicit
``seed``, ``set_epoch``, a strided per-rank slice of one global epoch streamed in
chunks (equal lengths on all ranks, memory independent of the epoch's length) and
exact mid-epoch resume through a versioned ``state_dict`` of global progress,
which loads into any number of ranks.
"""

from dataforge.samplers.base import EpochSampler
from dataforge.samplers.bucket import BucketBatchSampler
from dataforge.samplers.class_balanced import ClassBalancedSampler
from dataforge.samplers.distributed import DistributedSamplerWrapper
from dataforge.samplers.weighted import WeightedSampler

__all__ = [
    "BucketBatchSampler",
    "ClassBalancedSampler",
    "DistributedSamplerWrapper",
    "EpochSampler",
    "WeightedSampler",
]
