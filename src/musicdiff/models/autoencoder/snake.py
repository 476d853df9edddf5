"""SnakeBeta periodic activation (BigVGAN, Lee et al. 2023; used by the SA2 "Oobleck" autoencoder).

``snake_beta(x) = x + 1 / (beta + eps) * sin(alpha * x)^2`` with per-channel trainable ``alpha`` and
``beta`` stored in log scale (initialised to 0, i.e. alpha = beta = 1), as in stable-audio-tools.
"""

from __future__ import annotations

import torch
from torch import nn

_EPS = 1e-9


def snake_beta(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """SnakeBeta: ``x + sin(alpha x)^2 / (beta + 1e-9)``.

    Args:
        x: input ``[B, C, T]``.
        alpha: frequency ``[1, C, 1]`` (linear scale).
        beta: magnitude ``[1, C, 1]`` (linear scale).

    Returns:
        Tensor shaped like ``x``.
    """
    return x + (1.0 / (beta + _EPS)) * torch.sin(x * alpha).pow(2)


def snake_beta_inference(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """:func:`snake_beta` without autograd, computed in one output buffer.

    The same operations in the same order (multiplication and addition commute exactly in IEEE
    arithmetic), so the result is bit-identical; but the four temporaries of the out-of-place
    formula, each a fresh full-size allocation, become in-place updates of one buffer, done in
    cache-sized time blocks so that the five operations make one pass over memory. On CPU that
    makes the activation several times faster (large allocations are page-faulted anew on every
    call).
    """
    inv_beta = 1.0 / (beta + _EPS)
    out = torch.empty_like(x, dtype=torch.promote_types(x.dtype, alpha.dtype))
    length = x.shape[-1]
    block = _block_length(x, block_elements=1 << 18)
    for start in range(0, length, block):  # in cache-sized time blocks: one pass over memory
        xs, o = x[..., start:start + block], out[..., start:start + block]
        torch.mul(xs, alpha, out=o).sin_().pow_(2).mul_(inv_beta).add_(xs)
    return out


def _block_length(x: torch.Tensor, block_elements: int) -> int:
    """Time-block length whose slice of ``x`` holds about ``block_elements`` values (>= 1024 frames);
    the whole length off the CPU, where each block would cost kernel launches instead of saving
    cache misses."""
    length = x.shape[-1]
    if x.device.type != "cpu":
        return max(length, 1)
    rows = max(1, x.numel() // max(length, 1))
    return min(length, max(1024, block_elements // rows))


def snake_beta_inplace_(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
                        block_elements: int = 1 << 18) -> torch.Tensor:
    """:func:`snake_beta` written into ``x`` itself (no autograd), bit-identical again.

    ``x`` is processed in time blocks whose temporary (``block_elements`` floats, 1 MiB by default)
    stays in cache, so the activation needs no full-size buffer at all: one read and one write of
    ``x`` instead of five passes over fresh memory.
    """
    inv_beta = 1.0 / (beta + _EPS)
    length = x.shape[-1]
    block = _block_length(x, block_elements)
    fmt = torch.channels_last if x.ndim == 4 else torch.contiguous_format  # NWC layout: see layout.py
    tmp = torch.empty(*x.shape[:-1], block, dtype=torch.promote_types(x.dtype, alpha.dtype), device=x.device,
                      memory_format=fmt)
    for start in range(0, length, block):
        xs = x[..., start:start + block]
        t = tmp[..., : xs.shape[-1]]
        torch.mul(xs, alpha, out=t)
        xs.add_(t.sin_().pow_(2).mul_(inv_beta))
    return x


class SnakeBeta(nn.Module):
    """Per-channel SnakeBeta activation with log-scale parameters.

    Parameter names and shapes (``alpha [C]``, ``beta [C]``) match stable-audio-tools' ``SnakeBeta``.

    Args:
        channels: number of channels ``C`` of the ``[B, C, T]`` input.
        logscale: store alpha and beta as logs (SA2 default) instead of linear values.
        inplace: without autograd, overwrite the input with the result (only for inputs that
            nothing else reads afterwards, e.g. a convolution output inside a block).
    """

    def __init__(self, channels: int, logscale: bool = True, inplace: bool = False) -> None:
        super().__init__()
        if channels <= 0:
            raise ValueError(f"SnakeBeta needs a positive channel count, got {channels}")
        self.channels = channels
        self.logscale = logscale
        self.inplace = inplace
        init = torch.zeros(channels) if logscale else torch.ones(channels)
        self.alpha = nn.Parameter(init.clone())
        self.beta = nn.Parameter(init.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the activation to ``x [B, C, T]`` (or ``[B, C, 1, T]``, the NWC inference layout)."""
        shape = (1, -1) + (1,) * (x.ndim - 2)
        alpha = self.alpha.view(shape)
        beta = self.beta.view(shape)
        if self.logscale:
            alpha, beta = alpha.exp(), beta.exp()
        if torch.compiler.is_compiling() or (
                torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad or beta.requires_grad)):
            return snake_beta(x, alpha, beta)  # autograd, or torch.compile (which fuses it into one kernel)
        if self.inplace and x.dtype == torch.promote_types(x.dtype, alpha.dtype):
            return snake_beta_inplace_(x, alpha, beta)
        return snake_beta_inference(x, alpha, beta)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, logscale={self.logscale}" + (", inplace=True" if self.inplace else "")
