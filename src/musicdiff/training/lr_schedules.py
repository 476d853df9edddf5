"""Learning-rate schedules for the diffusion transformer.

``InverseLR`` is the inverse-decay schedule with exponential warmup of k-diffusion /
stable-audio-tools (used for SA2's DiT, REFERENCE.md "InverseLR warmup"):

    lr(step) = (1 − warmup^(step+1)) · max(final_lr, base_lr · (1 + step/inv_gamma)^(−power))

i.e. an exponential warmup factor times an inverse-power decay floored at ``final_lr``.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class InverseLR(LRScheduler):
    """Inverse-power decay with exponential warmup (one ``step()`` per optimiser step).

    Args:
        optimizer: the wrapped optimiser.
        inv_gamma: steps over which the lr falls by ``2^power`` (1e6 in SAO).
        power: decay exponent (0.5 in SAO).
        warmup: warmup factor in [0, 1); the lr reaches ~63% after ``1/(1−warmup)`` steps
            (0.99 in SAO).
        final_lr: lower bound on the decayed lr.
        last_epoch: index of the last step, -1 to start fresh.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        inv_gamma: float = 1.0,
        power: float = 1.0,
        warmup: float = 0.0,
        final_lr: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if inv_gamma <= 0:
            raise ValueError(f"inv_gamma must be positive, got {inv_gamma}")
        if not 0.0 <= warmup < 1.0:
            raise ValueError(f"warmup must be in [0, 1), got {warmup}")
        if final_lr < 0:
            raise ValueError(f"final_lr must be >= 0, got {final_lr}")
        self.inv_gamma = inv_gamma
        self.power = power
        self.warmup = warmup
        self.final_lr = final_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Learning rates of every parameter group at step ``self.last_epoch``."""
        return self._closed_form()

    def _get_closed_form_lr(self) -> list[float]:
        return self._closed_form()

    def _closed_form(self) -> list[float]:
        step = self.last_epoch
        warm = 1.0 - self.warmup ** (step + 1)
        decay = (1.0 + step / self.inv_gamma) ** -self.power
        return [warm * max(self.final_lr, base * decay) for base in self.base_lrs]
