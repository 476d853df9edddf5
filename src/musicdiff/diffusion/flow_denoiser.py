"""Denoiser wrappers for flow-time samplers and for velocity (rectified-flow) networks.

Samplers call a denoiser ``D(x, s, **cond) -> x0_hat``; the networks hold no preconditioning
(DESIGN.md principle 6). Two sampling spaces exist in musicdiff:

* ``ve`` (k-diffusion): ``x = x0 + σ·eps``, ``σ ∈ (0, ∞)`` (:class:`~musicdiff.diffusion.VDenoiser`
  for v-networks, :class:`FlowSigmaDenoiser` for velocity networks);
* ``flow``: ``x = (1 − t)·x0 + t·eps``, ``t ∈ (0, 1]`` (the flow samplers of
  :mod:`musicdiff.sampling.flow_samplers`; :class:`FlowDenoiser` for velocity networks,
  :class:`VFlowDenoiser` for v-networks).

For a velocity network (``v = eps − x0``, :mod:`musicdiff.diffusion.flow`) the clean estimate is
``x0 = x_t − t·v``, in EDM form (Karras et al., arXiv 2206.00364, eq. 7) ``c_in = c_skip = 1/(1+σ)``,
``c_out = −σ/(1+σ)`` with ``t = σ/(1+σ)``. For a v-network (``v = α·eps − s·x0``, ``α = cos(πτ/2)``,
``s = sin(πτ/2)``) the flow sample is a rescaled VP sample: with ``r = √((1−t)² + t²)``,
``x_vp = x_t / r`` has ``α = (1−t)/r``, ``s = t/r``, ``τ = 2/π·atan2(t, 1−t)`` — finite at ``t = 1``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from musicdiff.diffusion.flow import sigma_to_flow_t


def _per_item(s: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``s`` as a float32 ``[B]`` tensor and its ``[B, 1, ...]`` view in ``x``'s dtype."""
    s = torch.as_tensor(s, device=x.device, dtype=torch.float32).reshape(-1).expand(x.shape[0])
    return s, s.reshape((-1,) + (1,) * (x.ndim - 1)).to(x.dtype)


class FlowDenoiser(nn.Module):
    """``denoiser(x_t, t, **cond) -> x0_hat = x_t − t·v`` for a velocity network, in flow time.

    Args:
        model: network ``model(x_t, t, **cond) -> v`` (e.g. :class:`DiffusionTransformer`).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner_model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        """Denoise.

        Args:
            x: ``[B, ...]`` flow sample ``(1 − t)·x0 + t·eps``.
            t: ``[B]`` (or scalar) flow times in (0, 1].
            **cond: passed to the network.

        Returns:
            The estimate of ``x0``, same shape as ``x``.
        """
        t, tb = _per_item(t, x)
        return x - tb * self.inner_model(x, t, **cond).to(x.dtype)


class FlowSigmaDenoiser(nn.Module):
    """k-diffusion ``denoiser(x, σ, **cond) -> x0_hat`` for a velocity network.

    Lets every k-diffusion sampler (DPM-Solver++ SDE ...) run a rectified-flow model.

    Args:
        model: network ``model(x_t, t, **cond) -> v``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner_model = model

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        """Denoise a VE sample ``x0 + σ·eps`` (σ in (0, ∞)); returns ``x0_hat``."""
        sigma, sb = _per_item(sigma, x)
        x_t = x / (1 + sb)
        t = sigma_to_flow_t(sigma)
        return x_t - t.reshape(sb.shape).to(x.dtype) * self.inner_model(x_t, t, **cond).to(x.dtype)


class VFlowDenoiser(nn.Module):
    """Flow-time ``denoiser(x_t, t, **cond) -> x0_hat`` for a v-network (flow samplers on v models).

    Args:
        model: network ``model(x_vp, τ, **cond) -> v`` trained with the v-objective.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner_model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, **cond: Any) -> torch.Tensor:
        """Denoise a flow sample ``(1 − t)·x0 + t·eps``; returns ``x0_hat``."""
        t, tb = _per_item(t, x)
        r = torch.sqrt((1 - tb) ** 2 + tb**2)
        x_vp = x / r
        tau = torch.atan2(t, 1 - t) * (2 / math.pi)
        v = self.inner_model(x_vp, tau, **cond).to(x.dtype)
        return ((1 - tb) * x_vp - tb * v) / r
