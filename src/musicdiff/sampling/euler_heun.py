"""Euler and Heun samplers of the probability-flow ODE (Karras et al. 2022, Algorithm 2).

The ODE in sigma space is ``dx/dsigma = (x - D(x; sigma)) / sigma`` (EDM Eq. 3 with
``sigma(t) = t``), where ``D`` is the denoiser ``model(x, sigma, **extra_args) -> x0_hat``.
Both samplers match ``k_diffusion.sampling.sample_euler`` / ``sample_heun`` step for step,
including the optional "churn" (EDM Algorithm 2, lines 4-6) that re-adds noise.

Samplers are pure functions ``sample_x(model, x, sigmas, extra_args=None, callback=None,
disable=None, **opts) -> x0``; ``callback`` receives ``{"x", "i", "sigma", "sigma_hat",
"denoised"}`` once per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import trange

__all__ = ["sample_euler", "sample_heun", "to_d"]

Denoiser = Callable[..., torch.Tensor]


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Appends singleton dims to ``v`` until it has ``x.ndim`` dims."""
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """ODE derivative ``dx/dsigma = (x - denoised) / sigma`` (EDM Eq. 3)."""
    return (x - denoised) / _bcast(sigma, x)


def _churn(
    x: torch.Tensor,
    sigmas: torch.Tensor,
    i: int,
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """EDM Algorithm 2 lines 4-6: raise the noise level to ``sigma_hat = sigma (1 + gamma)``."""
    sigma = sigmas[i]
    in_range = s_tmin <= sigma <= s_tmax
    gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if in_range else 0.0
    # Drawn even when gamma == 0 so torch's global RNG advances exactly as in k-diffusion.
    eps = torch.randn_like(x) * s_noise
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
    return x, sigma_hat


@torch.no_grad()
def sample_euler(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Algorithm 2 without Heun).

    Args:
        model: Denoiser ``model(x, sigma [B], **extra_args) -> x0_hat``.
        x: Starting sample ``[B, ...]``, already scaled to ``sigmas[0]``.
        sigmas: Decreasing noise levels ``[n + 1]`` ending in 0.
        extra_args: Keyword arguments forwarded to ``model`` (conditioning).
        callback: Called once per step with the step's state.
        disable: Disables the progress bar (None: auto, as tqdm).
        s_churn: Total churn; 0 gives the deterministic ODE sampler.
        s_tmin: Lowest sigma where churn applies.
        s_tmax: Highest sigma where churn applies.
        s_noise: Scale of the churn noise (drawn with ``torch.randn_like``, torch's global RNG).

    Returns:
        The sample at ``sigmas[-1]``.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigma_hat, "denoised": denoised})
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_heun(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 2); Euler on the last step to 0.

    Uses two denoiser evaluations per step except the last. Arguments as :func:`sample_euler`.

    Returns:
        The sample at ``sigmas[-1]``.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        x, sigma_hat = _churn(x, sigmas, i, s_churn, s_tmin, s_tmax, s_noise)
        denoised = model(x, sigma_hat * s_in, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigma_hat, "denoised": denoised})
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
            continue
        x_euler = x + d * dt
        denoised_2 = model(x_euler, sigmas[i + 1] * s_in, **extra_args)
        d_2 = to_d(x_euler, sigmas[i + 1], denoised_2)
        x = x + (d + d_2) / 2 * dt
    return x
