"""Replacement ``forward``s of the DiT for inference (see :func:`musicdiff.models.inference.fast_inference`).

* Residual branches are added in place, and SwiGLU multiplies into its SiLU buffer.
* Batch rows whose conditioning tokens are all zero get no cross-attention update. That is exact:
  zero tokens give zero keys and values (the token projections and attention projections have no
  biases), hence a zero attention output and a zero branch; with ``qk_norm="ln"`` the keys become
  the norm's bias but the values stay zero, so the branch is still zero. Classifier-free guidance's
  unconditional half is such a batch (stable-audio-tools zeroes its tokens), so half of every
  guided step's cross-attention is skipped.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from musicdiff.models.dit.blocks import GLU, TransformerBlock
from musicdiff.models.inference.eager import eager_inference, residual_add

__all__ = ["ContextRows", "glu_forward", "transformer_block_forward"]


class ContextRows:
    """Indices of the batch rows whose context tokens are not all zero (None: every row), computed
    once per context tensor and shared by all blocks of a forward pass."""

    def __init__(self) -> None:
        self.context: torch.Tensor | None = None
        self.rows: torch.Tensor | None = None

    def __call__(self, context: torch.Tensor) -> torch.Tensor | None:
        if context is not self.context:
            active = context.flatten(1).ne(0).any(dim=1)
            self.rows = None if bool(active.all()) else active.nonzero().flatten()
            self.context = context
        return self.rows

    def clear(self) -> None:
        self.context = self.rows = None


def transformer_block_forward(block: TransformerBlock, rows: ContextRows) -> Callable[..., torch.Tensor]:
    """Replacement ``forward`` of a DiT block: in-place residuals, no cross-attention for zero-token rows."""

    def forward(x: torch.Tensor, context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                rotary_freqs: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        if not eager_inference():
            return TransformerBlock.forward(block, x, context, context_mask, rotary_freqs)
        x = residual_add(x, block.self_attn(block.pre_norm(x), rotary_freqs=rotary_freqs))
        if block.cross_attend and context is not None:
            active = rows(context)
            if active is None:
                x = residual_add(x, block.cross_attn(block.cross_attend_norm(x), context, context_mask))
            elif active.numel():
                mask = None if context_mask is None else context_mask.index_select(0, active)
                branch = block.cross_attn(block.cross_attend_norm(x.index_select(0, active)),
                                          context.index_select(0, active), mask)
                dtype = torch.promote_types(x.dtype, branch.dtype)  # as x + branch
                x = x.to(dtype).index_add(0, active, branch.to(dtype))
        return residual_add(x, block.ff(block.ff_norm(x)))

    return forward


def glu_forward(glu: GLU) -> Callable[[torch.Tensor], torch.Tensor]:
    """Replacement ``forward`` of SwiGLU: the same product, written into the SiLU buffer."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not eager_inference():
            return GLU.forward(glu, x)
        x, gate = glu.proj(x).chunk(2, dim=-1)
        return F.silu(gate).mul_(x)

    return forward
