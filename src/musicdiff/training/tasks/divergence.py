"""Divergence guard: notice a run that is blowing up, say so, and optionally roll it back.

On real music the tiny VAE recipe used to diverge silently (issue 14): the reconstruction loss
crept from 2.8 to 6.3 and the latents from std 0.7 to 15 over a few dozen steps while every
individual loss stayed finite, so the non-finite-loss guard never fired. :class:`DivergenceGuard`
watches a smoothed loss (an EMA over ~``1/(1-beta)`` steps, so single hard batches do not count)
and the latent scale:

* a **divergence** is the smoothed loss rising above ``factor`` x its best value so far (after
  ``warmup_steps``), or the smoothed latent RMS above ``latent_limit``;
* every divergence logs one WARNING naming the step, the values and what was done;
* ``action="rollback"`` restores the last in-memory snapshot of the modules and optimiser states
  (taken every ``snapshot_every`` healthy steps) and multiplies every learning rate by
  ``lr_factor``, at most ``max_rollbacks`` times; ``action="warn"`` only logs.

The guard lives in the task (the Trainer stays task-agnostic): snapshots are CPU copies of the
state dicts, so a rollback costs one copy, and checkpoints written later hold the lowered lr.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, Mapping

import torch
from torch import nn

log = logging.getLogger("musicdiff.trainer")

ACTIONS = ("warn", "rollback")


def _cpu_copy(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _cpu_copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu_copy(v) for v in state)
    return copy.deepcopy(state)


class DivergenceGuard:
    """Detects a diverging run from its smoothed loss and latent scale; warns or rolls back.

    Args:
        factor: divergence when the smoothed loss exceeds ``factor`` x its best value (None: off).
        beta: EMA decay of the smoothing (0.9: about 10 steps).
        warmup_steps: steps before the first check (the loss is still settling).
        latent_limit: divergence when the smoothed latent RMS exceeds this (None: off).
        action: ``warn`` or ``rollback``.
        snapshot_every: healthy steps between in-memory snapshots (rollback only).
        lr_factor: learning-rate multiplier applied at each rollback.
        max_rollbacks: rollbacks before the guard falls back to warnings only.
    """

    def __init__(self, factor: float | None = 1.5, beta: float = 0.9, warmup_steps: int = 50,
                 latent_limit: float | None = None, action: str = "warn", snapshot_every: int = 50,
                 lr_factor: float = 0.5, max_rollbacks: int = 3) -> None:
        if action not in ACTIONS:
            raise ValueError(f"divergence action must be one of {ACTIONS}, got {action!r}")
        if factor is not None and factor <= 1.0:
            raise ValueError(f"divergence factor must be > 1, got {factor}")
        if not 0.0 <= beta < 1.0 or not 0.0 < lr_factor <= 1.0:
            raise ValueError(f"need 0 <= beta < 1 and 0 < lr_factor <= 1, got {beta}, {lr_factor}")
        self.factor, self.beta, self.warmup_steps = factor, beta, int(warmup_steps)
        self.latent_limit, self.action = latent_limit, action
        self.snapshot_every, self.lr_factor, self.max_rollbacks = int(snapshot_every), lr_factor, int(max_rollbacks)
        self.reset()
        self.events = 0
        self.rollbacks = 0
        self._snapshot: dict[str, Any] | None = None
        self._snapshot_step = -1
        self._healthy = 0

    def reset(self) -> None:
        """Forget the smoothed values (after a rollback the statistics start again)."""
        self.loss_ema: float | None = None
        self.latent_ema: float | None = None
        self.best = math.inf
        self._seen = 0

    def _ema(self, old: float | None, new: float) -> float:
        return new if old is None else self.beta * old + (1 - self.beta) * new

    def observe(self, step: int, loss: float, latent_rms: float) -> str | None:
        """Feed one step's loss and latent RMS; returns a description of the divergence or None."""
        if not (math.isfinite(loss) and math.isfinite(latent_rms)):
            return None  # the non-finite guards handle these
        self.loss_ema, self.latent_ema = self._ema(self.loss_ema, loss), self._ema(self.latent_ema, latent_rms)
        self._seen += 1
        if self._seen < max(self.warmup_steps, 1):
            return None
        self.best = min(self.best, self.loss_ema)
        if self.factor is not None and self.loss_ema > self.factor * self.best:
            return (f"smoothed loss {self.loss_ema:.4g} is {self.loss_ema / self.best:.2f}x its best {self.best:.4g} "
                    f"(limit {self.factor}x)")
        if self.latent_limit is not None and self.latent_ema > self.latent_limit:
            return f"smoothed latent RMS {self.latent_ema:.3g} above the limit {self.latent_limit:g}"
        return None

    # ------------------------------------------------------------------ snapshots and rollback
    def maybe_snapshot(self, step: int, modules: Mapping[str, nn.Module],
                       optimizers: Mapping[str, tuple[torch.optim.Optimizer, Any]]) -> None:
        """Keep a CPU copy of modules and optimiser states every ``snapshot_every`` healthy steps."""
        if self.action != "rollback":
            return
        self._healthy += 1
        if self._snapshot is not None and self._healthy < self.snapshot_every:
            return
        self._healthy = 0
        self._snapshot = {"modules": {n: _cpu_copy(m.state_dict()) for n, m in modules.items()},
                          "optimizers": {n: _cpu_copy(o.state_dict()) for n, (o, _) in optimizers.items()}}
        self._snapshot_step = step

    def handle(self, step: int, reason: str, modules: Mapping[str, nn.Module],
               optimizers: Mapping[str, tuple[torch.optim.Optimizer, Any]]) -> bool:
        """Log the divergence and act on it; returns True when the run was rolled back."""
        self.events += 1
        if self.action != "rollback" or self._snapshot is None or self.rollbacks >= self.max_rollbacks:
            extra = (f" ({self.max_rollbacks} rollbacks already used)" if self.action == "rollback"
                     and self.rollbacks >= self.max_rollbacks else "")
            log.warning("divergence at step %d: %s%s; consider a lower learning rate or a warm-up "
                        "(task.lr_warmup_steps)", step, reason, extra)
            self.reset()  # one warning per episode, not one per step
            return False
        for name, module in modules.items():
            module.load_state_dict(self._snapshot["modules"][name])
        new_lrs = []
        for name, (opt, sched) in optimizers.items():
            opt.load_state_dict(self._snapshot["optimizers"][name])
            for group in opt.param_groups:
                group["lr"] *= self.lr_factor
                if "initial_lr" in group:
                    group["initial_lr"] *= self.lr_factor
                new_lrs.append(group["lr"])
            if sched is not None and hasattr(sched, "base_lrs"):
                sched.base_lrs = [lr * self.lr_factor for lr in sched.base_lrs]
        self.rollbacks += 1
        log.warning("divergence at step %d: %s; rolled back to the snapshot of step %d and multiplied the "
                    "learning rates by %g (now %s; rollback %d of %d)", step, reason, self._snapshot_step,
                    self.lr_factor, ", ".join(f"{lr:.3g}" for lr in new_lrs), self.rollbacks, self.max_rollbacks)
        self.reset()
        self._healthy = 0
        return True

    def metrics(self) -> dict[str, float]:
        """Counters for the training log."""
        return {"divergence_events": float(self.events), "rollbacks": float(self.rollbacks)}
