"""Multi-head self- and cross-attention through ``F.scaled_dot_product_attention``.

Vaswani et al., "Attention Is All You Need" (arXiv 1706.03762), eq. (1)-(2), with bias-free
projections as in the SA2 DiT. Self-attention uses one fused ``to_qkv`` projection; cross-attention
projects queries from the sequence (``to_q``) and keys/values from the conditioning tokens
(``to_kv``). When the context width is smaller than the model width (SAO: 768-wide T5 tokens
into a 1536-wide model) keys/values have fewer heads, shared between query heads (grouped-query
attention, Ainslie et al. arXiv 2305.13245) - the layout of stable-audio-tools checkpoints.
The output projection is zero-initialised so every residual branch starts as the identity.

Optional QK normalisation (``qk_norm="ln"``, used by the released Stable Audio Open Small DiT,
arXiv 2505.08175): each head's queries and keys go through their own LayerNorm over the head
dimension (learned scale and bias, eps 1e-6) before the rotary embedding, the "QK normalization"
of Dehghani et al., "Scaling Vision Transformers to 22 Billion Parameters" (arXiv 2302.05442),
which keeps attention logits from growing. Placement, eps and affine terms are those of
stable-audio-tools' ``Attention(qk_norm="ln")``, so its ``q_norm`` / ``k_norm`` weights map one to
one. Values are not normalised, so an all-zero context still gives a zero cross-attention output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musicdiff.models.dit.rotary import apply_rotary

QK_NORMS = ("none", "ln")


class Attention(nn.Module):
    """Self-attention (``dim_context=None``) or cross-attention over context tokens.

    Args:
        dim: model width.
        dim_heads: channels per head; ``dim`` must be a multiple of it.
        dim_context: width of the context tokens for cross-attention, or None for self-attention.
        zero_init_output: zero-initialise ``to_out`` (branch starts as identity).
        qk_norm: ``"none"`` or ``"ln"`` (per-head LayerNorm of queries and keys, eps 1e-6).
    """

    def __init__(
        self,
        dim: int,
        dim_heads: int = 64,
        dim_context: int | None = None,
        zero_init_output: bool = True,
        qk_norm: str = "none",
    ) -> None:
        super().__init__()
        if qk_norm not in QK_NORMS:
            raise ValueError(f"qk_norm={qk_norm!r} is not supported (musicdiff implements {list(QK_NORMS)})")
        if dim % dim_heads:
            raise ValueError(f"width {dim} is not a multiple of the head dim {dim_heads}")
        dim_kv = dim if dim_context is None else dim_context
        if dim_kv % dim_heads:
            raise ValueError(f"context width {dim_kv} is not a multiple of the head dim {dim_heads}")
        self.num_heads = dim // dim_heads
        self.kv_heads = dim_kv // dim_heads
        if self.num_heads % self.kv_heads:
            raise ValueError(
                f"{self.num_heads} query heads cannot share {self.kv_heads} key/value heads evenly"
            )
        self.dim_heads = dim_heads
        self.is_cross = dim_context is not None
        if self.is_cross:
            self.to_q = nn.Linear(dim, dim, bias=False)
            self.to_kv = nn.Linear(dim_kv, dim_kv * 2, bias=False)
        else:
            self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        if zero_init_output:
            nn.init.zeros_(self.to_out.weight)
        self.qk_norm = qk_norm
        if qk_norm == "ln":
            self.q_norm = nn.LayerNorm(dim_heads, eps=1e-6)
            self.k_norm = nn.LayerNorm(dim_heads, eps=1e-6)

    def _heads(self, x: torch.Tensor, heads: int) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, heads, self.dim_heads).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        rotary_freqs: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend.

        Args:
            x: ``[B, N, dim]`` sequence.
            context: ``[B, M, dim_context]`` tokens (cross-attention only).
            context_mask: bool ``[B, M]``, True where a context token may be attended to.
            rotary_freqs: ``[N, R]`` rotary angles for queries/keys, or their ``(cos, sin)``
                (self-attention only).

        Returns:
            ``[B, N, dim]``.
        """
        if self.is_cross:
            if context is None:
                raise ValueError("cross-attention needs a context tensor")
            q = self._heads(self.to_q(x), self.num_heads)
            k, v = self.to_kv(context).chunk(2, dim=-1)
        else:
            q, k, v = self.to_qkv(x).chunk(3, dim=-1)
            q = self._heads(q, self.num_heads)
        k, v = self._heads(k, self.kv_heads), self._heads(v, self.kv_heads)
        if self.qk_norm == "ln":  # under autocast LayerNorm returns float32: keep the projection dtype
            q, k = self.q_norm(q).to(q.dtype), self.k_norm(k).to(k.dtype)
        if rotary_freqs is not None:
            q, k = apply_rotary(q, rotary_freqs), apply_rotary(k, rotary_freqs)
        if self.kv_heads != self.num_heads:
            rep = self.num_heads // self.kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        attn_mask = None
        if context_mask is not None:
            mask = context_mask.to(torch.bool)
            # A row with no valid key would give NaN; let it attend to everything instead.
            mask = mask | ~mask.any(dim=-1, keepdim=True)
            attn_mask = mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        return self.to_out(out)
