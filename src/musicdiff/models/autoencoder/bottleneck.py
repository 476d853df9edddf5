"""VAE bottleneck of the SA2 autoencoder (SA2 §3.1).

The encoder emits ``2·D`` channels split into ``mean`` and ``scale``; ``std = softplus(scale) + 1e-4``;
latents are ``mean + std · eps`` while sampling, ``mean`` otherwise. The decoder side is the identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musicdiff.losses.posterior_kl import gaussian_kl

STD_FLOOR = 1e-4  # added to softplus(scale), as in stable-audio-tools


class VAEBottleneck(nn.Module):
    """Gaussian reparameterisation with KL information (no parameters)."""

    def encode(self, x: torch.Tensor, sample: bool = True,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Split ``x [B, 2D, L]`` into mean/scale and draw latents.

        Args:
            x: pre-bottleneck encoder output.
            sample: draw ``mean + std·eps`` (True) or return the mean (False).
            generator: optional RNG for the noise.

        Returns:
            ``(latents [B, D, L], {"kl": scalar, "mean": .., "scale": .., "std": ..})``.
        """
        if x.shape[1] % 2:
            raise ValueError(f"VAEBottleneck needs an even channel count (mean, scale), got {x.shape[1]}")
        mean, scale = x.chunk(2, dim=1)
        std = F.softplus(scale) + STD_FLOOR
        if sample:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            latents = mean + std * noise
        else:
            latents = mean
        info = {"kl": gaussian_kl(mean, std), "mean": mean, "scale": scale, "std": std}
        return latents, info

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Identity: the decoder consumes the latents directly."""
        return z
