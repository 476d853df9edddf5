"""What a task's ``training_step`` steps its optimisers with: backward, NaN guard, accumulation,
gradient all-reduce across processes, unscaling, clipping, optimiser and lr-schedule steps.

Without DeepSpeed the gradients of a whole accumulation cycle are averaged across ranks in one
bucketed all-reduce at its end (no DDP wrapper, so tasks call their submodules freely); with
DeepSpeed the engine reduces (and shards) them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, Mapping

import torch
import torch.distributed as dist

log = logging.getLogger("musicdiff.trainer")


class StepContext:
    """What a task's ``training_step`` uses to update its parameters (``ctx.backward_step``).

    Built by the Trainer once per ``fit`` from its collaborators, passed in explicitly (this module
    does not know the Trainer). The Trainer sets :attr:`step` before each micro-batch and reads
    :attr:`metrics`, :attr:`stepped` and :attr:`skipped` after it.

    Args:
        optimizers: ``{name: (optimizer, scheduler | None)}`` from the task's ``configure_optimizers``
            (with DeepSpeed: the engine's optimiser).
        grad_accum: micro-batches per optimiser step.
        world_size: number of processes (gradients and the NaN verdict are reduced across them).
        device: the training device (the NaN verdict is all-reduced there).
        grad_clip: max global gradient norm (0 disables clipping; DeepSpeed clips in the engine).
        scaler: the fp16 ``torch.amp.GradScaler``, or None.
        engine: the DeepSpeed engine, or None (plain PyTorch optimiser steps).

    Attributes:
        step: optimiser steps finished (for warnings), set by the Trainer.
        micro_step: micro-batches seen, advanced by the Trainer.
        metrics: per-step metrics written here (``grad_norm/<name>``), reset by the Trainer each micro-batch.
        stepped: ``{name: applied}`` of the current optimiser step (all False: the step was skipped).
        skipped: non-finite losses skipped per optimiser name.
    """

    def __init__(self, optimizers: Mapping[str, tuple[torch.optim.Optimizer, Any]], *, grad_accum: int = 1,
                 world_size: int = 1, device: torch.device | str = "cpu", grad_clip: float = 0.0,
                 scaler: torch.amp.GradScaler | None = None, engine: Any | None = None) -> None:
        self.optimizers = optimizers
        self.grad_accum, self.world_size, self.device = int(grad_accum), int(world_size), torch.device(device)
        self.grad_clip, self.scaler, self.engine = grad_clip, scaler, engine
        self.step = 0
        self.micro_step = 0
        self.metrics: dict[str, float] = {}
        self.skipped: dict[str, int] = defaultdict(int)
        self.stepped: dict[str, bool] = {}

    @property
    def sync(self) -> bool:
        """True on the micro-step that ends a gradient-accumulation cycle."""
        return (self.micro_step + 1) % self.grad_accum == 0

    def _all_finite(self, loss: torch.Tensor) -> bool:
        finite = torch.isfinite(loss.detach()).all().float().reshape(1)
        if self.world_size > 1:
            finite = finite.to(self.device)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item() > 0)

    def backward_step(self, name: str, loss: torch.Tensor) -> bool:
        """Backward ``loss`` and, at the end of an accumulation cycle, clip and step optimiser ``name``.

        Returns:
            False if the loss was not finite on any rank: nothing is applied, the gradients of this
            optimiser are cleared and the skip is counted and logged.
        """
        opt, sched = self.optimizers[name]
        if not self._all_finite(loss):
            self.skipped[name] += 1
            log.warning("non-finite %s loss at step %d: step skipped", name, self.step)
            if self.engine is not None:  # a zero-gradient micro-step keeps DeepSpeed's accumulation count in line
                return self._deepspeed_step(name, sched, sum(p.sum() for p in self.engine.parameters()
                                                              if p.requires_grad) * 0.0, finite=False)
            opt.zero_grad(set_to_none=True)
            self.stepped[name] = False
            return False
        if self.engine is not None:
            return self._deepspeed_step(name, sched, loss)
        scaled = loss / self.grad_accum
        if self.scaler is not None:
            self.scaler.scale(scaled).backward()
        else:
            scaled.backward()
        if not self.sync:
            self.stepped[name] = False
            return True
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if self.world_size > 1:
            _all_reduce_mean([p.grad for p in params], self.world_size)
        if self.scaler is not None:
            self.scaler.unscale_(opt)
        if self.grad_clip and params:
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            self.metrics[f"grad_norm/{name}"] = float(norm)
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad(set_to_none=True)
        self.stepped[name] = True
        return True

    def _deepspeed_step(self, name: str, sched: Any, loss: torch.Tensor, finite: bool = True) -> bool:
        """DeepSpeed micro-step: the engine scales by 1/grad_accum, reduces, clips and steps at the boundary.

        The boundary is set explicitly (Accelerate's ``backward`` would make every micro-batch one),
        and the lr schedule is stepped here once per optimiser step.
        """
        engine = self.engine
        engine.set_gradient_accumulation_boundary(self.sync)
        engine.backward(loss)
        engine.step()
        self.stepped[name] = finite and self.sync
        if self.sync:
            if sched is not None:
                sched.step()
            norm = engine.get_global_grad_norm()
            if norm is not None:
                self.metrics[f"grad_norm/{name}"] = float(norm)
        return finite


def _all_reduce_mean(grads: list[torch.Tensor], world_size: int, bucket_numel: int = 2**24) -> None:
    """Average gradients across ranks in flat buckets (one collective per ~64 MB)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads + [None]:  # type: ignore[list-item]
        if g is not None:
            bucket.append(g)
            size += g.numel()
        if bucket and (g is None or size >= bucket_numel):
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            flat /= world_size
            offset = 0
            for b in bucket:
                b.copy_(flat[offset: offset + b.numel()].view_as(b))
                offset += b.numel()
            bucket, size = [], 0
