"""The v-objective noise schedule and its link to k-diffusion's sigma.

Salimans & Ho, "Progressive Distillation for Fast Sampling of Diffusion Models" (arXiv
2202.00512) §4 / appendix D, as used by SA2 (REFERENCE.md): continuous time ``t ∈ [0, 1]``,
``alpha = cos(πt/2)``, ``sigma = sin(πt/2)`` (variance preserving, alpha² + sigma² = 1),
``x_t = alpha·x0 + sigma·eps`` and the target ``v = alpha·eps − sigma·x0``.

The equivalent variance-exploding noise level used by k-diffusion samplers (Karras et al., EDM,
arXiv 2206.00364, Table 1) is ``σ = sigma/alpha = tan(πt/2)``, so ``t = 2/π·atan(σ)``.
"""

from __future__ import annotations

import math

import torch


def t_to_alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha, sigma) = (cos(πt/2), sin(πt/2))`` for diffusion time ``t`` in [0, 1]."""
    return torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)


def alpha_sigma_to_t(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`t_to_alpha_sigma`: ``t = 2/π·atan2(sigma, alpha)``."""
    return torch.atan2(sigma, alpha) * 2 / math.pi


def t_to_sigma(t: torch.Tensor) -> torch.Tensor:
    """k-diffusion noise level ``σ = tan(πt/2)`` (infinite at t = 1)."""
    return torch.tan(t * math.pi / 2)


def sigma_to_t(sigma: torch.Tensor) -> torch.Tensor:
    """Diffusion time ``t = 2/π·atan(σ)`` of a k-diffusion noise level ``σ ≥ 0``."""
    return torch.atan(sigma) * 2 / math.pi


def add_noise(
    x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy sample and v target at time ``t`` (per batch item).

    Args:
        x0: clean data ``[B, ...]``.
        noise: standard normal noise of the same shape.
        t: ``[B]`` diffusion times.

    Returns:
        ``(x_t, v)`` with ``x_t = alpha·x0 + sigma·noise`` and ``v = alpha·noise − sigma·x0``.
    """
    shape = (-1,) + (1,) * (x0.ndim - 1)
    alpha, sigma = (a.to(x0.dtype).reshape(shape) for a in t_to_alpha_sigma(t))
    return alpha * x0 + sigma * noise, alpha * noise - sigma * x0
