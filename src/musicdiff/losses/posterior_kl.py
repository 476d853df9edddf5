"""KL divergence of the VAE posterior to a standard normal (Kingma & Welling 2014, App. B).

stable-audio-tools (and so SA2) use ``KL = mean_{b,t} sum_d (mu^2 + sigma^2 - log sigma^2 - 1)``,
i.e. twice the textbook value (no 1/2 factor), summed over latent channels and averaged over batch
and time. We keep that convention so the paper's weight 1e-4 means the same thing here.
"""

from __future__ import annotations

import torch
from torch import nn


def gaussian_kl(mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std^2) || N(0, 1)) in the SAT convention (see module docstring).

    Args:
        mean: posterior means ``[B, D, L]``.
        std: posterior standard deviations ``[B, D, L]`` (positive).

    Returns:
        Scalar tensor.
    """
    var = std * std
    return (mean * mean + var - torch.log(var) - 1).sum(1).mean()


class KLLoss(nn.Module):
    """Weighted KL term reading ``info["mean"]`` and ``info["std"]`` from the bottleneck.

    Args:
        weight: loss weight (SA2: 1e-4).
    """

    def __init__(self, weight: float = 1e-4) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Return ``weight · KL``."""
        return self.weight * gaussian_kl(mean, std)
