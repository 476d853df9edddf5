"""The rectified-flow interpolant and its link to k-diffusion's sigma.

Liu et al., "Flow Straight and Fast" (arXiv 2209.03003) and Esser et al., "Scaling Rectified Flow
Transformers" (arXiv 2403.03206) eq. (2)-(3), in stable-audio-tools' convention (``rectified_flow``
objective, used by Stable Audio Open Small, arXiv 2505.08175): time ``t ∈ [0, 1]`` runs from data
to noise, ``x_t = (1 − t)·x0 + t·eps`` and the network regresses the velocity
``v = dx_t/dt = eps − x0``. The noise coefficient is ``t`` itself, so the clean estimate is
``x0 = x_t − t·v``.

Dividing by ``1 − t`` gives the variance-exploding sample ``x0 + σ·eps`` of k-diffusion samplers
(Karras et al., EDM, arXiv 2206.00364) with ``σ = t/(1 − t)``, so ``t = σ/(1 + σ)``.
"""

from __future__ import annotations

import torch


def add_flow_noise(
    x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy sample and velocity target at time ``t`` (per batch item).

    Args:
        x0: clean data ``[B, ...]``.
        noise: standard normal noise of the same shape.
        t: ``[B]`` flow times in [0, 1].

    Returns:
        ``(x_t, v)`` with ``x_t = (1 − t)·x0 + t·noise`` and ``v = noise − x0``.
    """
    t = t.to(x0.dtype).reshape((-1,) + (1,) * (x0.ndim - 1))
    return x0 * (1 - t) + noise * t, noise - x0


def flow_t_to_sigma(t: torch.Tensor) -> torch.Tensor:
    """k-diffusion noise level ``σ = t/(1 − t)`` of flow time ``t`` (infinite at t = 1)."""
    return t / (1 - t)


def sigma_to_flow_t(sigma: torch.Tensor) -> torch.Tensor:
    """Flow time ``t = σ/(1 + σ)`` of a k-diffusion noise level ``σ ≥ 0``."""
    return sigma / (1 + sigma)
