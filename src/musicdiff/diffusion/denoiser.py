"""k-diffusion style denoiser wrapper around a v-predicting network.

Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models" (EDM, arXiv
2206.00364) eq. (7) with the v-prediction preconditioning of Table 1 / k-diffusion's
``VDenoiser``: for a VE noise level ``σ``, ``D(x; σ) = c_skip·x + c_out·F(c_in·x; t(σ))`` with
``c_in = 1/√(σ²+1)``, ``c_skip = 1/(σ²+1)``, ``c_out = −σ/√(σ²+1)`` and ``t = 2/π·atan(σ)``.
``c_in·x`` is exactly the VP sample ``alpha·x0 + sigma·eps`` the network was trained on.
The network itself holds no preconditioning (DESIGN.md principle 6).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from musicdiff.diffusion.v_noising import sigma_to_t


class VDenoiser(nn.Module):
    """``denoiser(x, sigma, **cond) -> x0_hat`` for samplers with k-diffusion semantics.

    Args:
        model: network ``model(x_vp, t, **cond) -> v`` (e.g. :class:`DiffusionTransformer`).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.inner_model = model

    @staticmethod
    def get_scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(c_skip, c_out, c_in)`` for noise levels ``sigma`` (EDM Table 1, v-prediction)."""
        c_skip = 1 / (sigma**2 + 1)
        c_out = -sigma / (sigma**2 + 1) ** 0.5
        c_in = 1 / (sigma**2 + 1) ** 0.5
        return c_skip, c_out, c_in

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, **cond: Any) -> torch.Tensor:
        """Denoise.

        Args:
            x: ``[B, ...]`` VE-noised sample ``x0 + σ·eps``.
            sigma: ``[B]`` (or scalar) noise levels in (0, ∞).
            **cond: passed to the network (``cross_attn_cond``, ``cross_attn_mask``, ``global_cond``).

        Returns:
            The estimate of ``x0``, same shape as ``x``.
        """
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32).reshape(-1)
        sigma = sigma.expand(x.shape[0])
        shape = (-1,) + (1,) * (x.ndim - 1)
        c_skip, c_out, c_in = (c.reshape(shape).to(x.dtype) for c in self.get_scalings(sigma))
        v = self.inner_model(x * c_in, sigma_to_t(sigma), **cond)
        return x * c_skip + v.to(x.dtype) * c_out
