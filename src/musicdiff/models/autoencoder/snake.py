"""SnakeBeta periodic activation (BigVGAN, Lee et al. 2023; used by the SA2 "Oobleck" autoencoder).

``snake_beta(x) = x + 1 / (beta + eps) * sin(alpha * x)^2`` with per-channel trainable ``alpha`` and
``beta`` stored in log scale (initialised to 0, i.e. alpha = beta = 1), as in stable-audio-tools.
"""

from __future__ import annotations

import torch
from torch import nn

_EPS = 1e-9


def snake_beta(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """SnakeBeta: ``x + sin(alpha x)^2 / (beta + 1e-9)``.

    Args:
        x: input ``[B, C, T]``.
        alpha: frequency ``[1, C, 1]`` (linear scale).
        beta: magnitude ``[1, C, 1]`` (linear scale).

    Returns:
        Tensor shaped like ``x``.
    """
    return x + (1.0 / (beta + _EPS)) * torch.sin(x * alpha).pow(2)


class SnakeBeta(nn.Module):
    """Per-channel SnakeBeta activation with log-scale parameters.

    Parameter names and shapes (``alpha [C]``, ``beta [C]``) match stable-audio-tools' ``SnakeBeta``.

    Args:
        channels: number of channels ``C`` of the ``[B, C, T]`` input.
        logscale: store alpha and beta as logs (SA2 default) instead of linear values.
    """

    def __init__(self, channels: int, logscale: bool = True) -> None:
        super().__init__()
        if channels <= 0:
            raise ValueError(f"SnakeBeta needs a positive channel count, got {channels}")
        self.channels = channels
        self.logscale = logscale
        init = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        self.beta = nn.Parameter(init.clone())

    def scales(self, ndim: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, beta)`` in linear scale, shaped ``[1, C, 1, ...]`` for an ``ndim``-D input."""
        shape = (1, -1) + (1,) * (ndim - 2)
        alpha, beta = self.alpha.view(shape), self.beta.view(shape)
        return (alpha.exp(), beta.exp()) if self.logscale else (alpha, beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the activation to ``x [B, C, T]``."""
        return snake_beta(x, *self.scales(x.ndim))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, logscale={self.logscale}"
