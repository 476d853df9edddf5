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
    formula, each a fresh full-size allocation, become in-place updates of one buffer. On CPU
    that makes the activation several times faster (large allocations are page-faulted anew on
    every call), and it halves the memory traffic on GPU.
    """
    out = torch.mul(x, alpha)
    out.sin_().pow_(2).mul_(1.0 / (beta + _EPS))
    return out.add_(x)


def snake_beta_inplace_(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
                        block_elements: int = 1 << 18) -> torch.Tensor:
    """:func:`snake_beta` written into ``x`` itself (no autograd), bit-identical again.

    ``x`` is processed in time blocks whose temporary (``block_elements`` floats, 1 MiB by default)
    stays in cache, so the activation needs no full-size buffer at all: one read and one write of
    ``x`` instead of five passes over fresh memory.
    """
    inv_beta = 1.0 / (beta + _EPS)
    length = x.shape[-1]
    rows = max(1, x.numel() // max(length, 1))
    block = min(length, max(1024, block_elements // rows))
    tmp = torch.empty(*x.shape[:-1], block, dtype=torch.promote_types(x.dtype, alpha.dtype), device=x.device)
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
        """Apply the activation to ``x [B, C, T]``."""
        alpha = self.alpha[None, :, None]
        beta = self.beta[None, :, None]
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
