"""Classifier-free guidance as a denoiser wrapper (Ho & Salimans 2022, "Classifier-Free
Diffusion Guidance", Eq. 6), with CFG-rescale (Lin et al. 2023, "Common Diffusion Noise Schedules
and Sample Steps are Flawed", Sec. 3.4, Algorithm 2) and a guidance interval in sigma
(Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval").

``D_cfg = D_uncond + scale * (D_cond - D_uncond)``. Guidance is applied to the denoiser output
``x0_hat``; for the v-denoiser ``x0_hat = c_skip x + c_out v`` is affine in ``v`` with the same
coefficients for both branches, so this equals guiding ``v`` as stable-audio-tools does. The
rescale (std matching, ``phi = rescale``) is computed on ``x0_hat`` over all non-batch dims.

Negative prompts are simply the ``uncond`` dict built from the negative prompt.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = ["CFGDenoiser", "batch_conditions", "pad_tokens"]


def pad_tokens(t: torch.Tensor, n: int) -> torch.Tensor:
    """Pads dim 1 (tokens) of ``t`` with zeros / False up to length ``n``."""
    extra = n - t.shape[1]
    if extra == 0:
        return t
    pad = [0, 0] * (t.ndim - 2) + [0, extra]
    if t.dtype == torch.bool:
        return F.pad(t.to(torch.uint8), pad).to(torch.bool)
    return F.pad(t, pad)


def batch_conditions(
    cond: Mapping[str, torch.Tensor | None], uncond: Mapping[str, torch.Tensor | None]
) -> dict[str, torch.Tensor | None]:
    """Concatenates two conditioning dicts along the batch dim, ``[cond; uncond]``.

    Token dims (dim 1 of ``cross_attn_cond`` / ``cross_attn_mask``) of different lengths are
    zero-padded (mask False) to the longer one. Keys holding None in both stay None.

    Args:
        cond: Conditioning tensors, batch first.
        uncond: Same keys as ``cond``.

    Returns:
        The batched conditioning dict.
    """
    if set(cond) != set(uncond):
        raise ValueError(f"cond and uncond must have the same keys, got {sorted(cond)} and {sorted(uncond)}")
    out: dict[str, torch.Tensor | None] = {}
    for key, c in cond.items():
        u = uncond[key]
        if c is None and u is None:
            out[key] = None
            continue
        if c is None or u is None:
            raise ValueError(f"conditioning key {key!r} is None in only one of cond / uncond")
        if c.ndim >= 2 and u.ndim == c.ndim and c.shape[1] != u.shape[1]:
            n = max(c.shape[1], u.shape[1])
            c, u = pad_tokens(c, n), pad_tokens(u, n)
        if c.shape[1:] != u.shape[1:]:
            raise ValueError(f"conditioning key {key!r}: shapes {tuple(c.shape)} and {tuple(u.shape)} differ")
        out[key] = torch.cat([c, u.to(c.dtype)], dim=0)
    return out


class CFGDenoiser:
    """Classifier-free guided denoiser, one batched forward for cond and uncond.

    Args:
        denoiser: ``denoiser(x, sigma, **cond) -> x0_hat`` (k-diffusion convention).
        scale: Guidance scale ``w`` (1: no guidance; SAO uses 7).
        rescale: CFG-rescale factor ``phi`` in [0, 1] (0: off).
        interval: ``(sigma_lo, sigma_hi)``: guidance applies only where ``lo <= sigma <= hi``;
            elsewhere the output is the conditional one.
    """

    def __init__(
        self,
        denoiser: Callable[..., torch.Tensor],
        scale: float = 1.0,
        rescale: float = 0.0,
        interval: Sequence[float] = (0.0, math.inf),
    ) -> None:
        if not 0.0 <= rescale <= 1.0:
            raise ValueError(f"cfg rescale must be in [0, 1], got {rescale}")
        if len(interval) != 2 or interval[0] > interval[1]:
            raise ValueError(f"cfg interval must be (low, high) with low <= high, got {interval}")
        self.denoiser = denoiser
        self.scale = float(scale)
        self.rescale = float(rescale)
        self.interval = (float(interval[0]), float(interval[1]))

    def __call__(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        cond: Mapping[str, torch.Tensor | None] | None = None,
        uncond: Mapping[str, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """Guided denoiser output.

        Args:
            x: Noisy input ``[B, ...]``.
            sigma: Noise levels ``[B]``.
            cond: Conditional inputs (e.g. ``cross_attn_cond``, ``cross_attn_mask``, ``global_cond``).
            uncond: Unconditional / negative-prompt inputs with the same keys; None disables CFG.

        Returns:
            ``x0_hat`` shaped like ``x``.
        """
        cond = {} if cond is None else dict(cond)
        lo, hi = self.interval
        active = (sigma >= lo) & (sigma <= hi)
        if uncond is None or self.scale == 1.0 or not bool(active.any()):
            return self.denoiser(x, sigma, **cond)
        both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), **batch_conditions(cond, uncond))
        d_cond, d_uncond = both.chunk(2, dim=0)
        guided = d_uncond + self.scale * (d_cond - d_uncond)
        if self.rescale > 0.0:
            dims = tuple(range(1, x.ndim))
            factor = d_cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
            guided = guided * (self.rescale * factor + (1.0 - self.rescale))
        mask = active.reshape(-1, *([1] * (x.ndim - 1)))
        return torch.where(mask, guided, d_cond)
