"""Exponential moving averages of model weights, shared by the autoencoder and diffusion tasks.

SA2 evaluates and exports EMA weights of both stages (REFERENCE.md: EMA decay 0.9999 for the DiT).
The average is a ``torch.optim.swa_utils.AveragedModel`` (state dict ``n_averaged`` + ``module.*``);
this module adds the warmed-up decay that stable-audio-tools trains with (:class:`EMAWarmup`) and an
update that also works under DeepSpeed ZeRO-3 (:func:`update_ema`), where every rank holds one
partition of each weight.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

__all__ = ["EMAWarmup", "build_ema", "ema_avg_fn", "update_ema"]


class EMAWarmup:
    """EMA update with a warmed-up decay, as a ``multi_avg_fn`` for ``AveragedModel``.

    ``decay(n) = min(beta, 1 − (1 + n/inv_gamma)^(−power))`` after ``n`` updates (the EMA warmup
    of k-diffusion / ema-pytorch that stable-audio-tools trains with, power 3/4), so the average
    tracks the model early in training and approaches ``beta`` later.

    Args:
        beta: the final decay (0.9999 in SA2).
        power: warm-up exponent (3/4 as stable-audio-tools).
        inv_gamma: warm-up time scale in updates.
    """

    def __init__(self, beta: float, power: float = 0.75, inv_gamma: float = 1.0) -> None:
        self.beta, self.power, self.inv_gamma = beta, power, inv_gamma

    def decay(self, n: float) -> float:
        """The decay used for update number ``n`` (n >= 1)."""
        return min(self.beta, max(0.0, 1.0 - (1.0 + n / self.inv_gamma) ** -self.power))

    @torch.no_grad()
    def __call__(self, ema_params: list, model_params: list, num_averaged: torch.Tensor) -> None:
        torch._foreach_lerp_(ema_params, model_params, 1.0 - self.decay(float(num_averaged)))


def ema_avg_fn(beta: float, warmup_power: float = 0.0):
    """The ``multi_avg_fn`` of an EMA with decay ``beta`` (warmed up by :class:`EMAWarmup` if ``warmup_power > 0``)."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"ema beta must be in [0, 1), got {beta}")
    return EMAWarmup(beta, warmup_power) if warmup_power > 0 else get_ema_multi_avg_fn(beta)


def build_ema(model: nn.Module, beta: float, warmup_power: float = 0.0, use_buffers: bool = True) -> AveragedModel:
    """A frozen ``AveragedModel`` of ``model``.

    Args:
        model: the trained module.
        beta: EMA decay in [0, 1).
        warmup_power: :class:`EMAWarmup` exponent; 0 = constant ``beta`` from the first update.
        use_buffers: also average floating-point buffers (else they keep their initial values).

    Returns:
        The average (first update copies the weights; ``requires_grad`` off).
    """
    ema = AveragedModel(model, multi_avg_fn=ema_avg_fn(beta, warmup_power), use_buffers=use_buffers)
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: AveragedModel, model: nn.Module) -> None:
    """One EMA update of ``ema`` towards ``model``, also under DeepSpeed ZeRO-3.

    Under ZeRO-3 ``p.data`` is empty outside a forward; each rank holds one partition
    (``p.ds_tensor``) of every weight, laid out alike for the model and its EMA copy, so averaging
    the local partitions (and the unpartitioned buffers) is exactly ``AveragedModel.update_parameters``.
    """
    first = next(model.parameters(), None)
    if first is None or not hasattr(first, "ds_tensor"):
        ema.update_parameters(model)
        return
    pairs = [(e.ds_tensor, p.ds_tensor) for e, p in zip(ema.module.parameters(), model.parameters())]
    if ema.use_buffers:
        pairs += [(e, b) for e, b in zip(ema.module.buffers(), model.buffers()) if e.is_floating_point()]
    averaged = [e for e, _ in pairs]
    current = [p.to(e.dtype) for e, p in pairs]
    if int(ema.n_averaged) == 0:
        torch._foreach_copy_(averaged, current)
    else:
        ema.multi_avg_fn(averaged, current, ema.n_averaged)
    ema.n_averaged += 1
