"""GAN objectives and feature matching for the autoencoder (SA2 §3.1, after EnCodec / MelGAN).

* Hinge (Lim & Ye 2017, as EnCodec Eq. 2-3): ``L_D = E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]``,
  ``L_G = -E[D(G(z))]``.
* Least squares (Mao et al. 2017): ``L_D = E[(D(x) - 1)^2] + E[D(G(z))^2]``, ``L_G = E[(D(G(z)) - 1)^2]``.
* Feature matching (Larsen et al. 2016; MelGAN): mean over layers of ``E|f(x) - f(G(z))|``.

Each objective is a small class (pick one in config); the discriminator averages over scales.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class HingeGANLoss(nn.Module):
    """Hinge GAN loss (SA2 / stable-audio-tools default)."""

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``mean relu(1 - real) + mean relu(1 + fake)``."""
        return torch.relu(1 - real).mean() + torch.relu(1 + fake).mean()

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """``-mean fake``."""
        return -fake.mean()


class LeastSquaresGANLoss(nn.Module):
    """Least-squares GAN loss (HiFi-GAN / DAC style)."""

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``mean (real - 1)^2 + mean fake^2``."""
        return (real - 1).pow(2).mean() + fake.pow(2).mean()

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """``mean (fake - 1)^2``."""
        return (fake - 1).pow(2).mean()


def feature_matching(real_feats: Sequence[torch.Tensor], fake_feats: Sequence[torch.Tensor],
                     normalize: bool = False) -> torch.Tensor:
    """Mean L1 distance between matching feature maps of one sub-discriminator.

    Args:
        real_feats: feature maps on real audio (targets; detach them for the generator loss).
        fake_feats: feature maps on reconstructions.
        normalize: divide each layer's distance by ``mean |real| + 1e-3``.

    Returns:
        Scalar: average over layers.
    """
    if len(real_feats) != len(fake_feats) or not real_feats:
        raise ValueError(f"need the same non-zero number of feature maps, got {len(real_feats)} vs {len(fake_feats)}")
    total = 0.0
    for r, f in zip(real_feats, fake_feats):
        d = (r - f).abs().mean()
        total = total + (d / (r.abs().mean() + 1e-3) if normalize else d)
    return total / len(real_feats)
