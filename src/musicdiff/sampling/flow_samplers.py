"""Samplers in flow time for rectified-flow models (stable-audio-tools 0.0.19 ``inference/sampling.py``).

Same calling convention as the k-diffusion samplers of :mod:`musicdiff.sampling.samplers`,
``sample_x(model, x, ts, extra_args=None, callback=None, disable=None, **opts)``, but in flow time:
``model(x_t, t, **extra_args) -> x0_hat`` is a flow-time denoiser
(:class:`~musicdiff.diffusion.FlowDenoiser`, possibly under CFG), ``x`` is the flow sample at
``ts[0]`` (pure noise when ``ts[0] = 1``) and ``ts`` decreases to 0 (:mod:`.flow_schedules`).
The velocity is ``v = (x − x0_hat)/t``.

* :func:`sample_flow_euler` - Euler on the flow ODE ``dx/dt = v`` (Liu et al. 2022, "Flow Straight
  and Fast"; SAT ``sample_discrete_euler``);
* :func:`sample_flow_pingpong` - alternately denoise fully and re-noise to the next time with fresh
  noise, the few-step sampler of adversarially post-trained models (Novack et al. 2025, "Fast
  Text-to-Audio Generation with Adversarial Post-Training", arXiv 2505.08175, Sec. 3.3);
* :func:`sample_flow_dpmpp` - DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Algorithm 2) with
  ``α_t = 1 − t``, ``σ_t = t``, ``λ = log((1 − t)/t)`` (SAT ``sample_flow_dpmpp``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import trange

__all__ = ["sample_flow_dpmpp", "sample_flow_euler", "sample_flow_pingpong"]


def _lambda(t: torch.Tensor) -> torch.Tensor:
    """Half log-SNR ``log((1 − t)/t)`` of flow time ``t`` (−inf at 1, +inf at 0)."""
    return ((1 - t) / t).log()


@torch.no_grad()
def sample_flow_euler(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    ts: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """Euler steps ``x ← x + (t_next − t)·v`` on the flow ODE.

    Args:
        model: Flow-time denoiser ``model(x, t [B], **extra_args) -> x0_hat``.
        x: Sample at ``ts[0]``.
        ts: Decreasing flow times ``[n + 1]`` ending in 0.
        extra_args: Keyword arguments for ``model``.
        callback: Called with ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` each step.
        disable: Disables the progress bar.

    Returns:
        The sample at ``t = 0``.
    """
    extra_args = extra_args or {}
    ones = x.new_ones([x.shape[0]])
    for i in trange(len(ts) - 1, disable=disable):
        t, t_next = ts[i], ts[i + 1]
        denoised = model(x, t * ones, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": t, "sigma_hat": t, "denoised": denoised})
        x = x + (t_next - t) * ((x - denoised) / t)
    return x


@torch.no_grad()
def sample_flow_pingpong(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    ts: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
    noise_sampler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Ping-pong sampling: ``x ← (1 − t_next)·x0_hat + t_next·n`` with fresh noise ``n``.

    Args:
        model: Flow-time denoiser ``model(x, t [B], **extra_args) -> x0_hat``.
        x: Sample at ``ts[0]``.
        ts: Decreasing flow times ``[n + 1]`` ending in 0.
        extra_args: Keyword arguments for ``model``.
        callback: Called with ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` each step.
        disable: Disables the progress bar.
        noise_sampler: ``noise_sampler(t, t_next) -> unit noise`` shaped like ``x``; None draws
            ``torch.randn_like`` from the global RNG (as SAT does).

    Returns:
        The last denoised estimate (the sample at ``t = 0``).
    """
    extra_args = extra_args or {}
    ones = x.new_ones([x.shape[0]])
    for i in trange(len(ts) - 1, disable=disable):
        t, t_next = ts[i], ts[i + 1]
        denoised = model(x, t * ones, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": t, "sigma_hat": t, "denoised": denoised})
        if t_next == 0:
            x = denoised
        else:
            noise = torch.randn_like(x) if noise_sampler is None else noise_sampler(t, t_next)
            x = (1 - t_next) * denoised + t_next * noise
    return x


@torch.no_grad()
def sample_flow_dpmpp(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    ts: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: Callable[[dict], None] | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) in flow time (multistep, deterministic).

    With ``h = λ(t_next) − λ(t)`` the update is ``x ← (t_next/t)·x − (1 − t_next)·(e^(−h) − 1)·D``,
    ``D`` the denoised estimate, extrapolated from the previous one with ``r = h_prev/h`` after the
    first step (first order at ``t = 1``, where ``λ = −∞``, and on the last step to ``t = 0``).

    Args:
        model: Flow-time denoiser ``model(x, t [B], **extra_args) -> x0_hat``.
        x: Sample at ``ts[0]``.
        ts: Decreasing flow times ``[n + 1]`` ending in 0.
        extra_args: Keyword arguments for ``model``.
        callback: Called with ``{"x", "i", "sigma", "sigma_hat", "denoised"}`` each step.
        disable: Disables the progress bar.

    Returns:
        The sample at ``t = 0``.
    """
    extra_args = extra_args or {}
    ones = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in trange(len(ts) - 1, disable=disable):
        t, t_next = ts[i], ts[i + 1]
        denoised = model(x, t * ones, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": t, "sigma_hat": t, "denoised": denoised})
        if t_next == 0:
            x = denoised
        else:
            h = _lambda(t_next) - _lambda(t)
            d = denoised
            if old_denoised is not None:  # r = inf (first order) right after t = 1
                r = (_lambda(t) - _lambda(ts[i - 1])) / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (t_next / t) * x - (1 - t_next) * torch.expm1(-h) * d
        old_denoised = denoised
    return x
