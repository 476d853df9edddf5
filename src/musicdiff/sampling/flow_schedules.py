"""Flow-time schedules for the flow samplers (stable-audio-tools 0.0.19 conventions).

A flow schedule returns ``n + 1`` decreasing flow times ``t`` (the noise coefficient of
``x_t = (1 − t)·x0 + t·eps``) from ``t_max`` (1 = pure noise; < 1 for audio-to-audio) down to a
final ``0``.

* :func:`get_flow_ts_logsnr` - equally spaced in ``λ = log((1 − t)/t)``, the schedule SAT's
  ``sample_rf`` uses for every rectified-flow sampler (``λ`` from −6 to 2, last time set to 0);
* :func:`get_flow_ts_linear` - equally spaced in ``t`` (SAT's ``sample_discrete_euler`` default),
  optionally through the length-dependent :class:`~musicdiff.diffusion.TimeShift`.
"""

from __future__ import annotations

import math

import torch

__all__ = ["get_flow_ts_linear", "get_flow_ts_logsnr"]


def _check(n: int, t_max: float) -> None:
    if int(n) != n or n < 1:
        raise ValueError(f"number of steps n must be a positive integer, got {n!r}")
    if not 0 < t_max <= 1:
        raise ValueError(f"t_max (sigma_max of a flow sampler) must be in (0, 1], got {t_max!r}")


def get_flow_ts_logsnr(
    n: int,
    sigma_max: float = 1.0,
    logsnr_min: float = -6.0,
    logsnr_max: float = 2.0,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Times equally spaced in half log-SNR ``λ = log((1 − t)/t)`` (SAT ``sample_rf``).

    ``λ_i`` runs linearly from ``λ(t_max)`` (``logsnr_min`` when ``t_max = 1``) to ``logsnr_max``
    over ``n + 1`` points, ``t_i = sigmoid(−λ_i)``, then ``t_0 = t_max`` and ``t_n = 0``.

    Args:
        n: Number of sampling steps.
        sigma_max: Starting flow time ``t_max`` in (0, 1] (1: generation from noise).
        logsnr_min: Starting ``λ`` when ``t_max = 1``.
        logsnr_max: ``λ`` the ramp ends at (replaced by ``t = 0``).
        device: Device of the returned tensor.

    Returns:
        Tensor ``[n + 1]`` of decreasing flow times ending in 0.
    """
    _check(n, sigma_max)
    start = math.log((1 - sigma_max) / sigma_max + 1e-6) if sigma_max < 1 else logsnr_min
    if start >= logsnr_max:
        raise ValueError(f"starting time {sigma_max} must be above sigmoid(-logsnr_max) = "
                         f"{1 / (1 + math.exp(logsnr_max)):.4f}, where this schedule ends")
    t = torch.sigmoid(-torch.linspace(start, logsnr_max, n + 1))
    t[0], t[-1] = sigma_max, 0.0
    return t.to(device)


def get_flow_ts_linear(
    n: int,
    sigma_max: float = 1.0,
    shift=None,
    length: int | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Times equally spaced from ``t_max`` to 0, optionally time-shifted (SAT ``sample_discrete_euler``).

    Args:
        n: Number of sampling steps.
        sigma_max: Starting flow time ``t_max`` in (0, 1].
        shift: Optional :class:`~musicdiff.diffusion.TimeShift` (needs ``length``).
        length: Latent frames of the generated window (for ``shift``).
        device: Device of the returned tensor.

    Returns:
        Tensor ``[n + 1]`` of decreasing flow times ending in 0.
    """
    _check(n, sigma_max)
    t = torch.linspace(sigma_max, 0, n + 1)
    if shift is not None:
        if length is None:
            raise ValueError("a time-shifted schedule needs the latent length")
        t = shift(t, length)
    return t.to(device)
