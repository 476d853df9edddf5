"""Rotary position embeddings (RoPE) on part of each attention head.

Su et al., "RoFormer: Enhanced Transformer with Rotary Position Embedding" (arXiv 2104.09864),
eq. (34): pairs of channels are rotated by an angle ``m·θ_i`` that grows with the position ``m``,
with ``θ_i = base^(−2i/d)``. As in GPT-J / GPT-NeoX and in the SA2 DiT (REFERENCE.md: "rotary
embeddings on 32 of the 64 head dims"), only the first ``rotary_dim`` channels of each head are
rotated; the rest pass through unchanged. The channel pairing is the "rotate half" layout
(channel ``i`` pairs with ``i + rotary_dim/2``), the one stable-audio-tools checkpoints use.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """Angles ``m·θ_i`` for positions ``0..n-1``.

    Args:
        dim: number of rotated channels per head (even).
        base: the RoPE frequency base (10 000 in RoFormer and SAT).
    """

    def __init__(self, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"rotary dim must be a positive even number, got {dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        # Persistent buffer so state dicts line up with stable-audio-tools (`rotary_pos_emb.inv_freq`).
        self.register_buffer("inv_freq", inv_freq)
        self.dim = dim

    def forward(self, seq_len: int) -> torch.Tensor:
        """Return the angles ``[seq_len, dim]`` (each frequency repeated for both halves)."""
        pos = torch.arange(seq_len, device=self.inv_freq.device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.float())
        return torch.cat((freqs, freqs), dim=-1)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """Map ``[x1, x2] -> [-x2, x1]`` on the last dimension (the 90° rotation of each pair)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rotary_cos_sin(freqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of the angles in float32, computed once and shared by every layer's q and k."""
    freqs = freqs.to(torch.float32)
    return freqs.cos(), freqs.sin()


def apply_rotary(x: torch.Tensor, freqs: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate the first ``R`` channels of ``x`` (RoFormer eq. 34).

    Args:
        x: ``[B, H, N, Dh]`` queries or keys.
        freqs: ``[N, R]`` angles from :class:`RotaryEmbedding` with ``R <= Dh``, or their
            ``(cos, sin)`` from :func:`rotary_cos_sin` (same result, no trigonometry per call).

    Returns:
        ``x`` with its first ``R`` channels rotated, computed in float32 and cast back.
    """
    cos, sin = freqs if isinstance(freqs, tuple) else rotary_cos_sin(freqs)
    rot = cos.shape[-1]
    if rot > x.shape[-1]:
        raise ValueError(f"rotary dim {rot} exceeds head dim {x.shape[-1]}")
    n = x.shape[-2]
    cos, sin = cos[-n:].to(torch.float32), sin[-n:].to(torch.float32)
    x_rot, x_pass = x[..., :rot].float(), x[..., rot:]
    x_rot = x_rot * cos + rotate_half(x_rot) * sin
    return torch.cat((x_rot.to(x.dtype), x_pass), dim=-1)
