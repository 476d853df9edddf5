"""Sigma schedules for sampling (k-diffusion conventions).

Every schedule returns ``n + 1`` noise levels: ``n`` decreasing sigmas from ``sigma_max`` to
``sigma_min`` followed by a final ``0`` (the clean sample). Sigmas are in the variance-exploding
parameterisation ``x_sigma = x0 + sigma * eps`` used by the samplers; for the v-objective model of
SA2 they map to ``t = 2/pi * atan(sigma)`` inside the denoiser.

Stable Audio Open samples with the polyexponential schedule, ``rho = 1`` (log-linear), sigma range
0.3–500 and 100 steps ([SAO] model card; stable-audio-tools ``sample_k``).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "append_zero",
    "get_sigmas_exponential",
    "get_sigmas_karras",
    "get_sigmas_polyexponential",
]


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    """Appends the terminal noise level 0 to a schedule.

    Args:
        sigmas: 1-D tensor of noise levels.

    Returns:
        The same levels followed by one zero.
    """
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _check(n: int, sigma_min: float, sigma_max: float) -> None:
    """Validates the common schedule arguments."""
    if int(n) != n or n < 1:
        raise ValueError(f"number of steps n must be a positive integer, got {n!r}")
    if not sigma_min > 0:
        raise ValueError(f"sigma_min must be > 0, got {sigma_min!r}")
    if not sigma_max >= sigma_min:
        raise ValueError(f"sigma_max ({sigma_max!r}) must be >= sigma_min ({sigma_min!r})")


def get_sigmas_karras(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Karras et al. (2022), "Elucidating the design space...", Eq. (5).

    ``sigma_i = (sigma_max^(1/rho) + i/(n-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``.

    Args:
        n: Number of sampling steps.
        sigma_min: Smallest non-zero noise level.
        sigma_max: Largest noise level (the starting one).
        rho: Curvature; 7 in EDM, larger values spend more steps at low noise.
        device: Device of the returned tensor.

    Returns:
        Tensor ``[n + 1]`` of decreasing sigmas ending in 0.
    """
    _check(n, sigma_min, sigma_max)
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return append_zero(sigmas).to(device)


def get_sigmas_exponential(
    n: int, sigma_min: float, sigma_max: float, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Exponential schedule: sigmas equally spaced in ``log sigma`` (k-diffusion).

    Args:
        n: Number of sampling steps.
        sigma_min: Smallest non-zero noise level.
        sigma_max: Largest noise level.
        device: Device of the returned tensor.

    Returns:
        Tensor ``[n + 1]`` of decreasing sigmas ending in 0.
    """
    _check(n, sigma_min, sigma_max)
    log_sigmas = torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device)
    return append_zero(log_sigmas.exp())


def get_sigmas_polyexponential(
    n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Polynomial-in-``log sigma`` schedule (k-diffusion), used by Stable Audio.

    ``log sigma_i = log sigma_min + (1 - i/(n-1))^rho * (log sigma_max - log sigma_min)``;
    ``rho = 1`` gives the exponential schedule.

    Args:
        n: Number of sampling steps.
        sigma_min: Smallest non-zero noise level.
        sigma_max: Largest noise level.
        rho: Polynomial degree of the ramp.
        device: Device of the returned tensor.

    Returns:
        Tensor ``[n + 1]`` of decreasing sigmas ending in 0.
    """
    _check(n, sigma_min, sigma_max)
    ramp = torch.linspace(1, 0, n, device=device) ** rho
    log_min = math.log(sigma_min)
    sigmas = torch.exp(ramp * (math.log(sigma_max) - log_min) + log_min)
    return append_zero(sigmas)
