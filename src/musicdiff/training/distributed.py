"""Multi-process pieces of the Trainer: layout-free seeds, cross-rank means, DeepSpeed engine state.

Data-parallel training over ``W`` processes with ``A`` micro-batches per optimiser step is the
same computation as one process accumulating ``W·A`` micro-batches when every micro-batch *slot*
``rank·A + i`` of a global batch sees the same items (:class:`ResumableShardedSampler`), draws the
same random numbers (:func:`micro_batch_seed`) and gradients are averaged over all slots. Seeding
per slot also gives every rank its own noise (ranks seeded alike would draw identical timesteps
and noise for different items) and makes a resumed run draw what the uninterrupted run drew.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist
from torch import nn

from musicdiff.training.checkpoint import CheckpointError

log = logging.getLogger("musicdiff.trainer")

DEEPSPEED_TAG = "deepspeed"  # sub-directory of a checkpoint holding the DeepSpeed engine state


def micro_batch_seed(seed: int, step: int, slot: int) -> int:
    """Torch seed of micro-batch ``slot`` (``rank * grad_accum + i``) of optimiser step ``step``."""
    digest = hashlib.blake2b(f"{seed}:{step}:{slot}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def rank_mean(values: Mapping[str, float], flag: bool, world_size: int,
              device: torch.device) -> tuple[dict[str, float], bool]:
    """Means of ``values`` over ranks, and whether ``flag`` is set on any rank, in one all-reduce.

    Every rank must pass the same keys (a task reports the same metrics on every rank).
    """
    if world_size == 1:
        return dict(values), flag
    keys = sorted(values)
    buf = torch.tensor([float(values[k]) for k in keys] + [float(flag)], dtype=torch.float64, device=device)
    dist.all_reduce(buf)
    out = (buf[:-1] / world_size).tolist()
    return dict(zip(keys, out)), bool(buf[-1].item() > 0)


def from_rank0(obj: Any, world_size: int) -> Any:
    """Rank 0's value of a picklable ``obj`` on every rank."""
    if world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def zero_stage(engine: Any) -> int:
    """The ZeRO stage of a DeepSpeed engine (0 without ZeRO)."""
    return int(engine.zero_optimization_stage()) if hasattr(engine, "zero_optimization_stage") else 0


def save_engine(engine: Any, staging: Path) -> None:
    """Write the engine state (module, fp32 master weights, this rank's ZeRO shard) into ``staging``.

    Collective: every rank calls it with the same (shared-filesystem) path.
    """
    engine.save_checkpoint(str(staging), tag=DEEPSPEED_TAG, save_latest=False)


def load_engine(engine: Any, checkpoint: Path) -> None:
    """Restore what :func:`save_engine` wrote (same world size and ZeRO stage).

    Raises:
        CheckpointError: the checkpoint holds no DeepSpeed state (saved by a non-DeepSpeed trainer).
    """
    if not (Path(checkpoint) / DEEPSPEED_TAG).is_dir():
        raise CheckpointError(f"{checkpoint} has no {DEEPSPEED_TAG}/ engine state: it was written by a "
                              "non-DeepSpeed trainer; resume with that trainer or start a new run dir")
    path, _ = engine.load_checkpoint(str(checkpoint), tag=DEEPSPEED_TAG, load_optimizer_states=True,
                                     load_lr_scheduler_states=False, load_module_strict=True)
    if path is None:
        raise CheckpointError(f"DeepSpeed could not load the engine state in {checkpoint / DEEPSPEED_TAG}")


def full_state(engine: Any, root: nn.Module, modules: Mapping[str, nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """Whole (gathered) weights of ``modules``, submodules of the engine's ``root``, under ZeRO-3.

    Collective; the tensors are complete on rank 0 only (DeepSpeed's 16-bit consolidation, which
    ``stage3_gather_16bit_weights_on_model_save`` enables).
    """
    full = engine._zero3_consolidated_16bit_state_dict() or {}
    prefixes = {id(m): name for name, m in root.named_modules()}
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, module in modules.items():
        pfx = prefixes.get(id(module))
        if pfx is None:
            raise ValueError(f"module {name!r} is not a submodule of the DeepSpeed model")
        pfx = f"{pfx}." if pfx else ""
        out[name] = {k[len(pfx):]: v for k, v in full.items() if k.startswith(pfx)}
    return out
