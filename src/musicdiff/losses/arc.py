"""The losses of ARC post-training (Novack et al., arXiv 2505.08175 §3): relativistic and contrastive.

* Relativistic adversarial loss (§3.1, after Jolicoeur-Martineau, arXiv 1807.00734): scores of
  real and generated latents noised with the *same* noise and time are compared pairwise,
  ``L_D = E softplus(−(D(x_real) − D(x_fake)))`` for the discriminator and
  ``L_G = E softplus(D(x_real) − D(x_fake))`` for the generator.
* Contrastive prompt loss (§3.2): the discriminator also compares a real latent under its own
  prompt with the same latent under another item's prompt (the batch's prompts rotated by one),
  ``L_C = E softplus(−(D(x_real, c) − D(x_real, c_rolled)))``, so it must judge prompt adherence.

stable-audio-tools 0.0.19 ``training/arc.py`` computes the same quantities (``tests/training``
checks the values against it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F


def relativistic_losses(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Relativistic pair loss (ARC eq. 3-4).

    Args:
        real_scores: discriminator scores of noised real latents ``[B, ...]``.
        fake_scores: scores of the generated latents noised with the same noise and time.

    Returns:
        ``(discriminator_loss, generator_loss)``.
    """
    diff = real_scores - fake_scores
    return F.softplus(-diff).mean(), F.softplus(diff).mean()


def contrastive_loss(matched_scores: torch.Tensor, mismatched_scores: torch.Tensor) -> torch.Tensor:
    """Contrastive prompt loss of the discriminator (ARC eq. 5).

    Args:
        matched_scores: scores of noised real latents under their own prompts.
        mismatched_scores: scores of the same inputs under rotated prompts.

    Returns:
        ``E softplus(−(matched − mismatched))``.
    """
    return F.softplus(-(matched_scores - mismatched_scores)).mean()


def roll_prompts(metadata: Sequence[Mapping[str, Any]], keys: Sequence[str] = ("prompt",)) -> list[dict[str, Any]]:
    """Copies of ``metadata`` where item ``i`` takes ``keys`` from item ``(i + 1) mod B``.

    Every item gets another item's prompt (a rotation); the inputs are not modified. (SAT 0.0.19
    rotates in place, so its last item receives the already rotated first prompt.)
    """
    n = len(metadata)
    if n < 2:
        raise ValueError("the contrastive loss needs at least 2 items per batch (prompts are swapped between items)")
    out = [dict(md) for md in metadata]
    for i in range(n):
        for key in keys:
            out[i][key] = metadata[(i + 1) % n][key]
    return out


def flow_noise(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``(1 − t)·x0 + t·noise`` with per-item ``t [B]`` (the rectified-flow interpolant)."""
    tb = t.reshape((-1,) + (1,) * (x0.ndim - 1)).to(x0.dtype)
    return (1 - tb) * x0 + tb * noise
