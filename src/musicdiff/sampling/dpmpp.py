"""DPM-Solver++ multistep samplers (Lu et al. 2022, "DPM-Solver++", arXiv 2211.01095).

All work in ``lambda = -log sigma`` (half the log-SNR for the scaled variable ``x = x0 + sigma eps``)
with step ``h = lambda_next - lambda``:

* :func:`sample_dpmpp_2m`: the 2nd-order multistep data-prediction solver (DPM-Solver++ paper,
  Algorithm 2), first-order on the first step and on the final step to sigma = 0.
* :func:`sample_dpmpp_2m_sde`: its SDE variant (Algorithm 2 with the SDE solver of Sec. 5 /
  Eq. (9)); ``eta`` scales the injected noise, ``eta = 0`` gives an ODE solver.
* :func:`sample_dpmpp_3m_sde`: third-order multistep SDE solver (k-diffusion's extension), the
  sampler Stable Audio uses (``dpmpp-3m-sde``, 100 steps).

The arithmetic follows ``k_diffusion.sampling`` so results agree to float rounding when both get
the same denoiser, sigmas and noise sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import trange

from musicdiff.sampling.noise import NoiseSampler, default_noise_sampler

__all__ = ["sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_dpmpp_3m_sde"]

Denoiser = Callable[..., torch.Tensor]


def _noise_sampler(x: torch.Tensor, sigmas: torch.Tensor, noise_sampler: NoiseSampler | None) -> NoiseSampler:
    """Returns ``noise_sampler`` or a randomly seeded default covering the schedule's range."""
    if noise_sampler is not None:
        return noise_sampler
    return default_noise_sampler(x, sigmas[sigmas > 0].min(), sigmas.max())


@torch.no_grad()
def sample_dpmpp_2m(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M), deterministic (Lu et al. 2022, Algorithm 2).

    ``x_next = (sigma_next / sigma) x - (e^{-h} - 1) D``, where ``D`` is the denoiser output,
    extrapolated from the previous one with ratio ``r = h_last / h`` after the first step.

    Args:
        model: Denoiser ``model(x, sigma [B], **extra_args) -> x0_hat``.
        x: Starting sample, already scaled to ``sigmas[0]``.
        sigmas: Decreasing noise levels ending in 0.
        extra_args: Keyword arguments forwarded to ``model``.
        callback: Called once per step with ``{"x", "i", "sigma", "sigma_hat", "denoised"}``.
        disable: Disables the progress bar.

    Returns:
        The sample at ``sigmas[-1]``.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        lam, lam_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = lam_next - lam
        ratio = lam_next.neg().exp() / lam.neg().exp()
        if old_denoised is None or sigmas[i + 1] == 0:
            x = ratio * x - (-h).expm1() * denoised
        else:
            r = (lam - sigmas[i - 1].log().neg()) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = ratio * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    solver_type: str = "midpoint",
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, Sec. 5), with midpoint or Heun correction.

    Args:
        model: Denoiser ``model(x, sigma [B], **extra_args) -> x0_hat``.
        x: Starting sample, already scaled to ``sigmas[0]``.
        sigmas: Decreasing noise levels ending in 0.
        extra_args: Keyword arguments forwarded to ``model``.
        callback: Called once per step.
        disable: Disables the progress bar.
        eta: Noise scale of the SDE (0: ODE).
        s_noise: Extra scale of the injected noise.
        noise_sampler: ``noise_sampler(sigma, sigma_next)``; None: randomly seeded Brownian tree.
        solver_type: ``"midpoint"`` or ``"heun"`` second-order correction.

    Returns:
        The sample at ``sigmas[-1]``.
    """
    if solver_type not in ("heun", "midpoint"):
        raise ValueError(f"solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
    noise_sampler = _noise_sampler(x, sigmas, noise_sampler)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    old_denoised, h_last = None, None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised  # final denoising step
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            eta_h = eta * h
            decay = (-h - eta_h).expm1().neg()  # 1 - e^{-(1 + eta) h}
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + decay * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + (decay / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * decay * (1 / r) * (denoised - old_denoised)
            if eta:
                noise_std = sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * s_noise
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * noise_std
            h_last = h
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM-Solver++(3M) SDE: third-order multistep extension of DPM-Solver++ SDE.

    Uses the last three denoiser outputs for first and second divided differences
    (``phi_2``, ``phi_3`` exponential integrator weights, Lu et al. 2022 Sec. 3) and adds
    ``sigma_next * sqrt(1 - e^{-2 eta h})`` Brownian noise per step.

    Args:
        model: Denoiser ``model(x, sigma [B], **extra_args) -> x0_hat``.
        x: Starting sample, already scaled to ``sigmas[0]``.
        sigmas: Decreasing noise levels ending in 0.
        extra_args: Keyword arguments forwarded to ``model``.
        callback: Called once per step.
        disable: Disables the progress bar.
        eta: Noise scale of the SDE (0: ODE).
        s_noise: Extra scale of the injected noise.
        noise_sampler: ``noise_sampler(sigma, sigma_next)``; None: randomly seeded Brownian tree.

    Returns:
        The sample at ``sigmas[-1]``.
    """
    noise_sampler = _noise_sampler(x, sigmas, noise_sampler)
    extra_args = {} if extra_args is None else extra_args
    s_in = x.new_ones([x.shape[0]])
    denoised_1, denoised_2 = None, None
    h, h_1, h_2 = None, None, None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised  # final denoising step
        else:
            h = sigmas[i].log() - sigmas[i + 1].log()
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                x = x + phi_2 * ((denoised - denoised_1) / (h_1 / h))
            if eta:
                noise_std = sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * noise_std
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x
