"""Timing conditioner: a float (seconds) -> one token via learned Fourier features.

SA2 (Evans et al., arXiv 2404.10301) §3.4 / Stable Audio (arXiv 2402.04825) §3.3: the start
time and total length of the training window, clamped to [0, 512] s and normalised to [0, 1],
are embedded with learned Fourier features (the "learned positional embedding" of
v-diffusion / audio-diffusion-pytorch: ``[x, sin(2π x w), cos(2π x w)]`` with learned ``w``)
followed by a linear layer. Module names follow stable-audio-tools' ``NumberConditioner``
(``embedder.embedding.0.weights``, ``embedder.embedding.1``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from musicdiff.models.conditioners.base import Conditioner


class LearnedFourierFeatures(nn.Module):
    """``x [B] -> [x, sin(2π x w), cos(2π x w)]`` of width ``dim + 1`` with learned ``w [dim/2]``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"Fourier feature dim must be even, got {dim}")
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None]
        freqs = x * self.weights[None, :] * 2 * math.pi
        return torch.cat([x, freqs.sin(), freqs.cos()], dim=-1)


class NumberEmbedder(nn.Module):
    """Learned Fourier features followed by a linear layer to ``features`` channels."""

    def __init__(self, features: int, dim: int = 256) -> None:
        super().__init__()
        self.features = features
        self.embedding = nn.Sequential(LearnedFourierFeatures(dim), nn.Linear(dim + 1, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x.reshape(-1)).view(*x.shape, self.features)


class NumberConditioner(Conditioner):
    """Embed floats (e.g. ``seconds_start``, ``seconds_total``) as one token each.

    Args:
        output_dim: token width.
        min_val: lower clamp (0 s).
        max_val: upper clamp (512 s).
        fourier_dim: number of learned Fourier features (256, as SAT).
    """

    def __init__(
        self, output_dim: int, min_val: float = 0.0, max_val: float = 512.0, fourier_dim: int = 256
    ) -> None:
        super().__init__(output_dim, output_dim)
        if max_val <= min_val:
            raise ValueError(f"max_val ({max_val}) must exceed min_val ({min_val})")
        self.min_val = float(min_val)
        self.max_val = float(max_val)
        self.embedder = NumberEmbedder(output_dim, fourier_dim)

    def forward(
        self, values: Sequence[float] | torch.Tensor, device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return tokens ``[B, 1, output_dim]`` and an all-True mask ``[B, 1]``."""
        try:
            x = torch.as_tensor([float(v) for v in values], dtype=torch.float32, device=device)
        except (TypeError, ValueError) as err:
            raise ValueError(f"NumberConditioner needs numbers, got {list(values)!r}") from err
        x = (x.clamp(self.min_val, self.max_val) - self.min_val) / (self.max_val - self.min_val)
        param = self.embedder.embedding[1].weight
        emb = self.embedder(x.to(param.dtype))[:, None, :]
        return emb, torch.ones(emb.shape[0], 1, dtype=torch.bool, device=emb.device)
