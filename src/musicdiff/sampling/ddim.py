"""DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models") in sigma space.

For a v-objective model wrapped as a denoiser, the DDIM update of the variance-preserving latent
``z_t = alpha_t x0 + sigma_t eps`` (DDIM Eq. 12) becomes, in the scaled variable
``x = z / alpha`` with ``sigma = sigma_t / alpha_t``::

    eps_hat = (x - x0_hat) / sigma
    x_next  = x0_hat + sqrt(sigma_next^2 - sigma_up^2) * eps_hat + sigma_up * noise
    sigma_up = eta * sigma_next * sqrt(1 - sigma_next^2 / sigma^2)

(the DDIM ``sigma_t(eta)`` of Eq. 16 divided by ``alpha_next``). With ``eta = 0`` this is exactly
the Euler step of the probability-flow ODE on the same sigmas; with ``eta = 1`` it is ancestral
sampling (DDPM), i.e. k-diffusion's ``sample_euler_ancestral``. Stable-audio-tools' ``v-ddim``
sampler takes these steps on a linear grid in t; here any sigma schedule can be used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import trange

from musicdiff.sampling.noise import NoiseSampler

__all__ = ["ddim_sigma_up", "sample_ddim"]


def ddim_sigma_up(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float) -> torch.Tensor | float:
    """Fresh-noise level of one DDIM step in sigma space (DDIM Eq. 16 over ``alpha_next``)."""
    if not eta:
        return 0.0
    up = eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
    return torch.minimum(torch.as_tensor(up), torch.as_tensor(sigma_next))


@torch.no_grad()
def sample_ddim(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DDIM sampling with stochasticity ``eta`` (0: deterministic DDIM, 1: DDPM-like).

    Args:
        model: Denoiser ``model(x, sigma [B], **extra_args) -> x0_hat``.
        x: Starting sample ``[B, ...]``, already scaled to ``sigmas[0]``.
        sigmas: Decreasing noise levels ``[n + 1]`` ending in 0.
        extra_args: Keyword arguments forwarded to ``model``.
        callback: Called once per step with ``{"x", "i", "sigma", "sigma_hat", "denoised"}``.
        disable: Disables the progress bar.
        eta: DDIM stochasticity (Song et al. 2021, Eq. 16).
        s_noise: Scale of the fresh noise.
        noise_sampler: ``noise_sampler(sigma, sigma_next)``; None uses ``torch.randn_like``.

    Returns:
        The sample at ``sigmas[-1]``.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    extra_args = {} if extra_args is None else extra_args
    if noise_sampler is None:
        noise_sampler = lambda sigma, sigma_next: torch.randn_like(x)  # noqa: E731
    s_in = x.new_ones([x.shape[0]])
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        if sigma_next == 0:
            x = denoised
            continue
        eps = (x - denoised) / sigma
        sigma_up = ddim_sigma_up(sigma, sigma_next, eta)
        sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
        x = denoised + eps * sigma_down
        if eta:
            x = x + noise_sampler(sigma, sigma_next) * s_noise * sigma_up
    return x
