"""SnakeBeta without autograd: one output buffer, or in place (bit-identical to ``snake_beta``).

The plain activation (:func:`musicdiff.models.autoencoder.snake.snake_beta`) allocates four
full-size temporaries. Here the same operations in the same order (multiplication and addition
commute exactly in IEEE arithmetic) run as in-place updates of one buffer, in cache-sized time
blocks so that the five operations make one pass over memory; on CPU that makes the activation
several times faster (large allocations are page-faulted anew on every call). Where the input is
a fresh intermediate that nothing else reads, the result overwrites it (no full-size buffer at all).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from musicdiff.models.autoencoder.snake import _EPS, SnakeBeta
from musicdiff.models.inference.eager import eager_inference

__all__ = ["snake_beta_inference", "snake_beta_inplace_", "snake_forward"]


def _block_length(x: torch.Tensor, block_elements: int) -> int:
    """Time-block length whose slice of ``x`` holds about ``block_elements`` values (>= 1024 frames);
    the whole length off the CPU, where each block would cost kernel launches instead of saving
    cache misses."""
    length = x.shape[-1]
    if x.device.type != "cpu":
        return max(length, 1)
    rows = max(1, x.numel() // max(length, 1))
    return min(length, max(1024, block_elements // rows))


def snake_beta_inference(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``snake_beta(x, alpha, beta)`` computed in one output buffer (no autograd)."""
    inv_beta = 1.0 / (beta + _EPS)
    out = torch.empty_like(x, dtype=torch.promote_types(x.dtype, alpha.dtype))
    block = _block_length(x, block_elements=1 << 18)
    for start in range(0, x.shape[-1], block):
        xs, o = x[..., start:start + block], out[..., start:start + block]
        torch.mul(xs, alpha, out=o).sin_().pow_(2).mul_(inv_beta).add_(xs)
    return out


def snake_beta_inplace_(x: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
                        block_elements: int = 1 << 18) -> torch.Tensor:
    """``snake_beta`` written into ``x`` itself, through a ``block_elements`` temporary (1 MiB)."""
    inv_beta = 1.0 / (beta + _EPS)
    block = _block_length(x, block_elements)
    fmt = torch.channels_last if x.ndim == 4 else torch.contiguous_format  # NWC layout: see layout.py
    tmp = torch.empty(*x.shape[:-1], block, dtype=torch.promote_types(x.dtype, alpha.dtype), device=x.device,
                      memory_format=fmt)
    for start in range(0, x.shape[-1], block):
        xs = x[..., start:start + block]
        t = tmp[..., : xs.shape[-1]]
        torch.mul(xs, alpha, out=t)
        xs.add_(t.sin_().pow_(2).mul_(inv_beta))
    return x


def snake_forward(act: SnakeBeta, inplace: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    """Replacement ``forward`` of ``act``: the buffer-saving forms in eager inference.

    Args:
        act: the activation module.
        inplace: overwrite the input (only for inputs produced right before, that nothing else reads).
    """

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not eager_inference():
            return SnakeBeta.forward(act, x)
        alpha, beta = act.scales(x.ndim)
        if inplace and x.dtype == torch.promote_types(x.dtype, alpha.dtype):
            return snake_beta_inplace_(x, alpha, beta)
        return snake_beta_inference(x, alpha, beta)

    return forward
