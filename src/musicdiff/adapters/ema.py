"""An EMA of adapter weights only, usable where the diffusion task expects an EMA DiT.

A full ``AveragedModel(dit)`` would copy the frozen base (4.2 GB in float32 for the SA2 DiT) only to
average constants. :class:`AdapterEMA` averages the adapter's parameters alone; its ``module`` is a
view that runs the live DiT with the averaged adapter weights substituted
(``torch.func.functional_call``), so ``task.ema.module(x, t, ...)`` samples with the EMA adapter as
``AveragedModel.module`` would.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call
from torch.optim.swa_utils import AveragedModel

from musicdiff.adapters.stack import ADAPTER_PREFIX, stack_of


class EMAAdaptedDiT(nn.Module):
    """``forward`` = the DiT's, with adapter ``name``'s weights replaced by the EMA's.

    Args:
        dit: the adapted DiT.
        name: the adapter averaged.
        averaged: the averaged :class:`musicdiff.adapters.stack.AdapterSet` copy.
    """

    def __init__(self, dit: nn.Module, name: str, averaged: nn.Module) -> None:
        super().__init__()
        self.dit = dit
        self._prefix = f"{ADAPTER_PREFIX}sets.{name}."
        self._averaged = [averaged]  # a list: not registered, not moved twice

    @property
    def io_channels(self) -> int:
        """Latent channels of the DiT."""
        return self.dit.io_channels

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The DiT's forward with the EMA adapter weights."""
        weights = {self._prefix + k: v for k, v in self._averaged[0].state_dict().items()}
        return functional_call(self.dit, weights, args, kwargs, strict=False)


class AdapterEMA(nn.Module):
    """EMA of adapter ``name`` of ``dit``; ``update_parameters(dit)`` and ``module`` as ``AveragedModel``.

    Args:
        dit: the adapted DiT.
        name: the adapter to average.
        multi_avg_fn: ``AveragedModel``'s ``multi_avg_fn`` (e.g. the task's EMA warmup).
    """

    def __init__(self, dit: nn.Module, name: str, multi_avg_fn: Callable) -> None:
        super().__init__()
        self.name = name
        self.averaged = AveragedModel(stack_of(dit).sets[name], multi_avg_fn=multi_avg_fn, use_buffers=True)
        self.averaged.requires_grad_(False)
        self._dit = [dit]

    @property
    def n_averaged(self) -> torch.Tensor:
        """Number of updates so far."""
        return self.averaged.n_averaged

    @property
    def multi_avg_fn(self) -> Callable:
        """The averaging function."""
        return self.averaged.multi_avg_fn

    @property
    def module(self) -> EMAAdaptedDiT:
        """The DiT with the averaged adapter weights (a view; nothing copied)."""
        return EMAAdaptedDiT(self._dit[0], self.name, self.averaged.module)

    @torch.no_grad()
    def update_parameters(self, dit: nn.Module) -> None:
        """One EMA step towards the live adapter weights of ``dit``."""
        self.averaged.update_parameters(stack_of(dit).sets[self.name])

    def averaged_tensors(self) -> dict[str, torch.Tensor]:
        """The EMA weights keyed as :func:`musicdiff.adapters.io.adapter_tensors`."""
        s = self.averaged.module
        return {f"{n}.{k}": v for n in s.names for k, v in s.layer(n).state_dict().items()}
