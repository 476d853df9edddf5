"""What a task's ``training_step`` steps its optimisers with: backward, NaN guard, accumulation,
gradient all-reduce across processes, unscaling, clipping, optimiser and lr-schedule steps.

Without DeepSpeed the gradients of a whole accumulation cycle are averaged across ranks in one
bucketed all-reduce at its end (no DDP wrapper, so tasks call their submodules freely); with
DeepSpeed the engine reduces (and shards) them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from musicdiff.training.trainer import Trainer

log = logging.getLogger("musicdiff.trainer")


class StepContext:
    """What a task's ``training_step`` uses to update its parameters (``ctx.backward_step``)."""

    def __init__(self, trainer: "Trainer", optimizers: Mapping[str, tuple[torch.optim.Optimizer, Any]]):
        self.trainer = trainer
        self.optimizers = optimizers
        self.accelerator = trainer.accelerator
        self.micro_step = 0
        self.skipped: dict[str, int] = defaultdict(int)
        self.stepped: dict[str, bool] = {}

    @property
    def sync(self) -> bool:
        """True on the micro-step that ends a gradient-accumulation cycle."""
        return (self.micro_step + 1) % self.trainer.grad_accum == 0

    def _all_finite(self, loss: torch.Tensor) -> bool:
        finite = torch.isfinite(loss.detach()).all().float().reshape(1)
        if self.trainer.world_size > 1:
            finite = finite.to(self.accelerator.device)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item() > 0)

    def backward_step(self, name: str, loss: torch.Tensor) -> bool:
        """Backward ``loss`` and, at the end of an accumulation cycle, clip and step optimiser ``name``.

        Returns:
            False if the loss was not finite on any rank: nothing is applied, the gradients of this
            optimiser are cleared and the skip is counted and logged.
        """
        opt, sched = self.optimizers[name]
        tr = self.trainer
        if not self._all_finite(loss):
            self.skipped[name] += 1
            log.warning("non-finite %s loss at step %d: step skipped", name, tr.step)
            if tr.deepspeed:  # a zero-gradient micro-step keeps DeepSpeed's accumulation count in line
                return self._deepspeed_step(name, sched, sum(p.sum() for p in tr.engine.parameters()
                                                              if p.requires_grad) * 0.0, finite=False)
            opt.zero_grad(set_to_none=True)
            self.stepped[name] = False
            return False
        if tr.deepspeed:
            return self._deepspeed_step(name, sched, loss)
        scaled = loss / tr.grad_accum
        if tr.scaler is not None:
            tr.scaler.scale(scaled).backward()
        else:
            scaled.backward()
        if not self.sync:
            self.stepped[name] = False
            return True
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if tr.world_size > 1:
            _all_reduce_mean([p.grad for p in params], tr.world_size)
        if tr.scaler is not None:
            tr.scaler.unscale_(opt)
        if tr.grad_clip and params:
            norm = torch.nn.utils.clip_grad_norm_(params, tr.grad_clip)
            tr.step_metrics[f"grad_norm/{name}"] = float(norm)
        if tr.scaler is not None:
            tr.scaler.step(opt)
            tr.scaler.update()
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
        engine = self.trainer.engine
        engine.set_gradient_accumulation_boundary(self.sync)
        engine.backward(loss)
        engine.step()
        self.stepped[name] = finite and self.sync
        if self.sync:
            if sched is not None:
                sched.step()
            norm = engine.get_global_grad_norm()
            if norm is not None:
                self.trainer.step_metrics[f"grad_norm/{name}"] = float(norm)
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
