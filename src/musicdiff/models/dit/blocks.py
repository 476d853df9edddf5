"""The SA2 DiT block: pre-norm self-attention -> cross-attention -> SwiGLU feed-forward.

Evans et al., "Long-form music generation with latent diffusion" (SA2, arXiv 2404.10301) §3.3:
each block applies bias-free LayerNorm before self-attention (with rotary embeddings),
cross-attention on the conditioning tokens and a SwiGLU feed-forward (Shazeer, "GLU Variants
Improve Transformer", arXiv 2002.05202, eq. 6), each added as a residual branch whose output
projection is zero-initialised. Module names follow stable-audio-tools' ``TransformerBlock``
so its checkpoints map onto these by a rename table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musicdiff.models.dit.attention import Attention


class LayerNorm(nn.Module):
    """LayerNorm with a learned scale ``gamma`` and no bias (Ba et al. 2016, eq. 4 without β)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], weight=self.gamma, eps=self.eps)


class GLU(nn.Module):
    """Gated linear unit ``a ⊙ SiLU(b)`` with ``[a, b] = W x + c`` (SwiGLU, Shazeer 2020 eq. 6)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.silu(gate)


class FeedForward(nn.Module):
    """SwiGLU feed-forward ``dim -> mult·dim -> dim`` with a zero-initialised output layer.

    ``ff`` is ``Sequential(GLU, Identity, Linear)``; the Identity keeps the indices (``ff.0``,
    ``ff.2``) of stable-audio-tools checkpoints.
    """

    def __init__(self, dim: int, mult: int = 4, zero_init_output: bool = True) -> None:
        super().__init__()
        inner = int(dim * mult)
        out = nn.Linear(inner, dim)
        if zero_init_output:
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)
        self.ff = nn.Sequential(GLU(dim, inner), nn.Identity(), out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class TransformerBlock(nn.Module):
    """One DiT block (pre-norm residual branches; SA2 §3.3).

    Args:
        dim: model width.
        dim_heads: channels per attention head.
        dim_context: width of the cross-attention tokens, or None for no cross-attention.
        ff_mult: feed-forward expansion (4 in SA2).
        zero_init_branch_outputs: zero-initialise every branch's output projection.
        qk_norm: query/key normalisation of both attentions (``"none"`` or ``"ln"``, see
            :class:`Attention`).
    """

    def __init__(
        self,
        dim: int,
        dim_heads: int = 64,
        dim_context: int | None = None,
        ff_mult: int = 4,
        zero_init_branch_outputs: bool = True,
        qk_norm: str = "none",
    ) -> None:
        super().__init__()
        self.pre_norm = LayerNorm(dim)
        self.self_attn = Attention(dim, dim_heads, zero_init_output=zero_init_branch_outputs, qk_norm=qk_norm)
        self.cross_attend = dim_context is not None
        if self.cross_attend:
            self.cross_attend_norm = LayerNorm(dim)
            self.cross_attn = Attention(
                dim, dim_heads, dim_context=dim_context, zero_init_output=zero_init_branch_outputs,
                qk_norm=qk_norm,
            )
        self.ff_norm = LayerNorm(dim)
        self.ff = FeedForward(dim, ff_mult, zero_init_output=zero_init_branch_outputs)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        rotary_freqs: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``[B, N, dim] -> [B, N, dim]``; ``context``/``context_mask`` as in :class:`Attention`."""
        x = x + self.self_attn(self.pre_norm(x), rotary_freqs=rotary_freqs)
        if self.cross_attend and context is not None:
            x = x + self.cross_attn(self.cross_attend_norm(x), context, context_mask)
        return x + self.ff(self.ff_norm(x))
