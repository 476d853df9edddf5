"""A resumable, rank-sharded random order over a dataset.

Every epoch draws one global permutation from ``(seed, epoch)``; global batch ``b`` holds items
``perm[b*G:(b+1)*G]`` with ``G = micro_batch * world_size``, and rank ``r`` takes its contiguous
slice. So 1 process with batch ``2B`` sees exactly the items that 2 processes with batch ``B``
see together, and resuming at (epoch, batch) replays nothing and skips nothing.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class ResumableShardedSampler(Sampler[int]):
    """Index sampler for one rank; call :meth:`set_position` before iterating.

    Args:
        length: dataset size.
        micro_batch: items per rank per batch.
        rank: this process's rank.
        world_size: number of processes.
        seed: base seed of the permutations.
        shuffle: random order (else sequential).
    """

    def __init__(self, length: int, micro_batch: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True) -> None:
        if length <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.length, self.micro_batch, self.rank, self.world_size = length, micro_batch, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_batch = 0, 0

    @property
    def global_batch(self) -> int:
        return self.micro_batch * self.world_size

    def batches_per_epoch(self) -> int:
        """Whole global batches per epoch (at least one: small datasets are repeated)."""
        return max(1, self.length // self.global_batch)

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        """Start at global batch ``start_batch`` of ``epoch``."""
        self.epoch, self.start_batch = epoch, start_batch

    def _permutation(self) -> torch.Tensor:
        need = self.batches_per_epoch() * self.global_batch
        if not self.shuffle:
            base = torch.arange(self.length)
            return base.repeat((need + self.length - 1) // self.length)[:need]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        reps = (need + self.length - 1) // self.length
        return torch.cat([torch.randperm(self.length, generator=g) for _ in range(reps)])[:need]

    def __iter__(self) -> Iterator[int]:
        perm = self._permutation()
        for b in range(self.start_batch, self.batches_per_epoch()):
            lo = b * self.global_batch + self.rank * self.micro_batch
            yield from perm[lo: lo + self.micro_batch].tolist()

    def __len__(self) -> int:
        return (self.batches_per_epoch() - self.start_batch) * self.micro_batch
