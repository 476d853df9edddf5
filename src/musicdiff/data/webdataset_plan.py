"""The epoch plan of a sharded stream: which samples each node, rank and DataLoader worker reads.

WebDataset's own splitters (``split_by_node``, ``split_by_worker``) hand out whole shards, so
with shards of unequal size the ranks see different numbers of samples (a DDP step would hang)
and an epoch is not "every sample once". Here the plan is made at sample level from the shard
sizes, while every worker still reads whole runs of consecutive samples of a few shards:

1. Epoch ``e`` permutes the shards with ``(seed, e)``; their samples, in that order, form one
   stream of global positions ``0 .. N-1`` (repeated with further permutations when the epoch
   needs more samples than there are, as the map-style sampler repeats a small dataset).
2. An epoch uses ``U = batches_per_epoch x global_batch`` positions (the
   :class:`~musicdiff.training.data_order.ResumableShardedSampler` arithmetic, so both dataset kinds
   have epochs of the same length). Rank ``r`` takes the contiguous range ``[r R, (r+1) R)``,
   ``R = U / world_size`` (nodes x processes: ranks are global).
3. The DataLoader takes micro-batches from its ``k`` workers round-robin, so micro-batch ``j``
   of a rank comes from the worker playing role ``j mod k``; role ``q`` gets
   ``ceil((M - q) / k)`` of the rank's ``M`` micro-batches, as one contiguous sub-range.
4. Each role emits its range through WebDataset's shuffle buffer (``webdataset.filters._shuffle``
   with an RNG seeded by (seed, epoch, rank, role)). That buffer's picks depend only on how many
   samples it holds, never on their content, so the output order is computed here on positions
   and the reader emits the real samples in that order, holding at most ``buffer_size`` of them.

Resume: after ``m`` micro-batches of a rank, role ``q`` has emitted ``ceil((m - q) / k)``
batches; a restarted loader skips exactly those outputs (re-reading, undecoded, from the oldest
sample still in the buffer at that point and from the start of its shard) and its worker ``i`` plays role
``(i + m) mod k``, so the next micro-batch comes from the role that would have given it.
Nothing read ahead (DataLoader prefetch, the shuffle buffer) counts as consumed: a resumed run
repeats and skips no sample relative to the checkpoint it resumes from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from webdataset.filters import _shuffle


@dataclass(frozen=True)
class Piece:
    """Samples ``[start, stop)`` (positions inside the shard) of shard ``shard``."""

    shard: int
    start: int
    stop: int


@dataclass(frozen=True)
class WorkerPlan:
    """What one DataLoader worker of one rank emits this epoch.

    Attributes:
        pieces: the worker's input, in reading order (local input index ``i`` runs over them).
        first_position: global stream position of local input 0 (``+ i`` for input ``i``).
        order: local input indices in output order, already-consumed outputs removed.
        role: the round-robin role the worker plays.
    """

    pieces: tuple[Piece, ...]
    first_position: int
    order: tuple[int, ...]
    role: int


def shard_order(num_shards: int, seed: int, epoch: int, rounds: int) -> list[int]:
    """Shard indices in stream order: ``rounds`` permutations keyed on (seed, epoch, round)."""
    out: list[int] = []
    for r in range(rounds):
        order = list(range(num_shards))
        random.Random(f"shards-{seed}-{epoch}-{r}").shuffle(order)
        out.extend(order)
    return out


def pieces_of(counts: Sequence[int], order: Sequence[int], lo: int, hi: int) -> list[Piece]:
    """The shard pieces holding global stream positions ``[lo, hi)`` of the stream ``order``."""
    pieces, pos = [], 0
    for shard in order:
        n = counts[shard]
        a, b = max(lo, pos), min(hi, pos + n)
        if a < b:
            pieces.append(Piece(shard, a - pos, b - pos))
        pos += n
        if pos >= hi:
            break
    return pieces


def role_batches(micro_batches: int, workers: int) -> list[int]:
    """Micro-batches of each round-robin role: ``ceil((M - q) / k)`` for role ``q``."""
    return [max(0, -(-(micro_batches - q) // workers)) for q in range(workers)]


def shuffled(n: int, buffer_size: int, seed: str) -> list[int]:
    """Output order of ``n`` inputs through WebDataset's shuffle buffer (identity for buffer <= 1)."""
    if buffer_size <= 1:
        return list(range(n))
    return list(_shuffle(iter(range(n)), bufsize=buffer_size, initial=buffer_size, rng=random.Random(seed)))


def worker_plan(counts: Sequence[int], *, seed: int, epoch: int, rank: int, world_size: int, items_per_rank: int,
                batch_size: int, workers: int, worker: int, consumed_items: int = 0,
                buffer_size: int = 0) -> WorkerPlan:
    """The plan of DataLoader worker ``worker`` of rank ``rank`` (see the module doc).

    Args:
        counts: samples per shard.
        seed: data seed.
        epoch: epoch number.
        rank: global rank (node-major, as torch.distributed numbers them).
        world_size: number of ranks.
        items_per_rank: samples each rank consumes this epoch (a multiple of ``batch_size``).
        batch_size: DataLoader batch (micro-batch) size.
        workers: DataLoader workers (1 for a loader without workers).
        worker: this worker's id.
        consumed_items: samples of this epoch this rank has already consumed (resume).
        buffer_size: shuffle buffer size (0 or 1: stream order).

    Returns:
        The worker's :class:`WorkerPlan`.
    """
    if items_per_rank % batch_size or consumed_items % batch_size:
        raise ValueError(f"items per rank ({items_per_rank}) and consumed items ({consumed_items}) must be "
                         f"multiples of the batch size {batch_size}")
    total = sum(counts)
    if total <= 0:
        raise ValueError("no samples in the shards")
    used = items_per_rank * world_size
    order = shard_order(len(counts), seed, epoch, -(-used // total))
    micro, consumed = items_per_rank // batch_size, consumed_items // batch_size
    role = (worker + consumed) % workers
    sizes = role_batches(micro, workers)
    lo = rank * items_per_rank + sum(sizes[:role]) * batch_size
    n = sizes[role] * batch_size
    done = role_batches(consumed, workers)[role] * batch_size
    outputs = shuffled(n, buffer_size, f"buffer-{seed}-{epoch}-{rank}-{role}")
    return WorkerPlan(tuple(pieces_of(counts, order, lo, lo + n)), lo, tuple(outputs[done:]), role)
