"""The SA2 diffusion transformer (DiT): a v-predicting transformer over latent frames.

Evans et al., "Long-form music generation with latent diffusion" (SA2, arXiv 2404.10301) §3.3 and
Fig. 2: latents ``[B, D, L]`` are projected to the model width without patching, a global token
(MLP of the timing conditioning plus a timestep embedding: 256 random Fourier features + MLP,
Tancik et al. arXiv 2006.10739) is prepended, and a stack of pre-norm blocks with rotary
self-attention, cross-attention on the conditioning tokens and SwiGLU runs over the sequence.
The network only predicts ``v``; the v-objective scalings live in
:class:`musicdiff.diffusion.VDenoiser`.

Parameter names and shapes follow stable-audio-tools' ``DiffusionTransformer`` /
``ContinuousTransformer`` (``to_timestep_embed``, ``to_cond_embed``, ``to_global_embed``,
``preprocess_conv``, ``transformer.layers.N.self_attn.to_qkv``, ``...self_attn.q_norm`` ...). The
only differences in a checkpoint are SAT's all-zero ``*.beta`` buffers of its bias-free LayerNorms,
which have no counterpart here and are dropped on import.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from musicdiff.models.dit.blocks import TransformerBlock
from musicdiff.models.dit.rotary import RotaryEmbedding, rotary_cos_sin


class FourierFeatures(nn.Module):
    """Random Fourier features ``[cos(2π x Wᵀ), sin(2π x Wᵀ)]`` with a learned ``W`` (Tancik et al. eq. 5)."""

    def __init__(self, in_features: int, out_features: int, std: float = 1.0) -> None:
        super().__init__()
        if out_features % 2:
            raise ValueError(f"out_features must be even, got {out_features}")
        self.weight = nn.Parameter(torch.randn(out_features // 2, in_features) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x @ self.weight.T
        return torch.cat([f.cos(), f.sin()], dim=-1)


class ContinuousTransformer(nn.Module):
    """Input/output projections around a stack of :class:`TransformerBlock` with shared RoPE.

    Args:
        dim: model width.
        depth: number of blocks.
        dim_in: input channels (projected to ``dim`` without bias).
        dim_out: output channels.
        dim_heads: channels per head.
        dim_context: cross-attention token width, or None for no cross-attention.
        rotary_dim: rotated channels per head (SA2: half the head).
        ff_mult: SwiGLU expansion.
        qk_norm: query/key normalisation in every attention (``"none"`` or ``"ln"``).
        gradient_checkpointing: recompute each block in the backward pass while training.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        dim_in: int,
        dim_out: int,
        dim_heads: int = 64,
        dim_context: int | None = None,
        rotary_dim: int | None = None,
        ff_mult: int = 4,
        qk_norm: str = "none",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.project_in = nn.Linear(dim_in, dim, bias=False)
        self.project_out = nn.Linear(dim, dim_out, bias=False)
        rotary_dim = dim_heads // 2 if rotary_dim is None else rotary_dim
        self.rotary_pos_emb = RotaryEmbedding(rotary_dim) if rotary_dim > 0 else None
        self.layers = nn.ModuleList(
            TransformerBlock(dim, dim_heads, dim_context=dim_context, ff_mult=ff_mult, qk_norm=qk_norm)
            for _ in range(depth)
        )
        self.gradient_checkpointing = gradient_checkpointing

    def forward(
        self,
        x: torch.Tensor,
        prepend_embeds: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[B, N, dim_in] -> [B, P + N, dim_out]`` where ``P`` prepended tokens come first."""
        x = self.project_in(x)
        if prepend_embeds is not None:
            x = torch.cat([prepend_embeds.to(x.dtype), x], dim=1)
        freqs = rotary_cos_sin(self.rotary_pos_emb(x.shape[1])) if self.rotary_pos_emb is not None else None
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, context, context_mask, freqs, use_reentrant=False)
            else:
                x = layer(x, context, context_mask, freqs)
        return self.project_out(x)


class DiffusionTransformer(nn.Module):
    """SA2 DiT: ``forward(x [B,D,L], t [B], cross_attn_cond, cross_attn_mask, global_cond) -> v``.

    Args:
        io_channels: latent channels ``D`` (64 for SA2).
        width: model width (1536 for SA2; ``embed_dim`` in stable-audio-tools).
        depth: number of blocks (24).
        num_heads: attention heads (24, head dim 64).
        cond_token_dim: width of the cross-attention tokens (768 = T5-base/CLAP); 0 disables
            cross-attention.
        global_cond_dim: width of the global conditioning vector (SA2: 2 timing embeddings); 0
            means the global token is the timestep embedding alone.
        project_cond_tokens: project cross-attention tokens to ``width`` (else keep
            ``cond_token_dim``; SAO keeps 768 and shares key/value heads).
        project_global_cond: project the global vector to ``width`` (required for the
            prepended token, kept for SAT parity).
        ff_mult: SwiGLU expansion (4).
        rotary_dim: rotated channels per head; None means half the head dim.
        timestep_features_dim: Fourier features of ``t`` (256).
        use_cross_attn_mask: honour ``cross_attn_mask`` (SAT/SAO were trained with it ignored).
        qk_norm: ``"ln"`` normalises each head's queries and keys with a LayerNorm (Stable Audio
            Open Small; Dehghani et al. arXiv 2302.05442), ``"none"`` (SA2, SAO 1.0) does not.
        gradient_checkpointing: recompute blocks in backward to save activation memory.
    """

    def __init__(
        self,
        io_channels: int,
        width: int,
        depth: int,
        num_heads: int,
        cond_token_dim: int = 0,
        global_cond_dim: int = 0,
        project_cond_tokens: bool = True,
        project_global_cond: bool = True,
        ff_mult: int = 4,
        rotary_dim: int | None = None,
        timestep_features_dim: int = 256,
        use_cross_attn_mask: bool = True,
        qk_norm: str = "none",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        if global_cond_dim > 0 and not project_global_cond and global_cond_dim != width:
            raise ValueError("project_global_cond=False needs global_cond_dim == width")
        self.io_channels = io_channels
        self.width = width
        self.cond_token_dim = cond_token_dim
        self.global_cond_dim = global_cond_dim
        self.use_cross_attn_mask = use_cross_attn_mask

        self.timestep_features = FourierFeatures(1, timestep_features_dim)
        self.to_timestep_embed = nn.Sequential(
            nn.Linear(timestep_features_dim, width),
            nn.SiLU(),
            nn.Linear(width, width),
        )
        cond_width = None
        if cond_token_dim > 0:
            cond_width = width if project_cond_tokens else cond_token_dim
            self.to_cond_embed = nn.Sequential(
                nn.Linear(cond_token_dim, cond_width, bias=False),
                nn.SiLU(),
                nn.Linear(cond_width, cond_width, bias=False),
            )
        if global_cond_dim > 0:
            global_width = width if project_global_cond else global_cond_dim
            self.to_global_embed = nn.Sequential(
                nn.Linear(global_cond_dim, global_width, bias=False),
                nn.SiLU(),
                nn.Linear(global_width, global_width, bias=False),
            )
        self.transformer = ContinuousTransformer(
            width,
            depth,
            dim_in=io_channels,
            dim_out=io_channels,
            dim_heads=width // num_heads,
            dim_context=cond_width,
            rotary_dim=rotary_dim,
            ff_mult=ff_mult,
            qk_norm=qk_norm,
            gradient_checkpointing=gradient_checkpointing,
        )
        # Zero-initialised 1x1 residual convs around the transformer (identity at init).
        self.preprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        self.postprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        nn.init.zeros_(self.preprocess_conv.weight)
        nn.init.zeros_(self.postprocess_conv.weight)

    @property
    def gradient_checkpointing(self) -> bool:
        """Whether blocks are recomputed in the backward pass."""
        return self.transformer.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, value: bool) -> None:
        self.transformer.gradient_checkpointing = bool(value)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cross_attn_cond: torch.Tensor | None = None,
        cross_attn_mask: torch.Tensor | None = None,
        global_cond: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict ``v`` for noisy latents.

        Args:
            x: ``[B, io_channels, L]`` noisy latents ``alpha·x0 + sigma·eps``.
            t: ``[B]`` (or scalar) diffusion time in [0, 1].
            cross_attn_cond: ``[B, N, cond_token_dim]`` conditioning tokens.
            cross_attn_mask: bool ``[B, N]``, True for tokens to attend to.
            global_cond: ``[B, global_cond_dim]`` global conditioning vector.

        Returns:
            ``[B, io_channels, L]`` predicted ``v = alpha·eps − sigma·x0``.
        """
        if x.ndim != 3 or x.shape[1] != self.io_channels:
            raise ValueError(f"x must be [B, {self.io_channels}, L], got {tuple(x.shape)}")
        b = x.shape[0]
        dtype = self.preprocess_conv.weight.dtype
        x = x.to(dtype)
        t = torch.as_tensor(t, device=x.device, dtype=dtype).reshape(-1).expand(b)

        global_embed = self.to_timestep_embed(self.timestep_features(t[:, None]))
        if global_cond is not None:
            if self.global_cond_dim == 0:
                raise ValueError("global_cond given but the model has global_cond_dim=0")
            global_embed = global_embed + self.to_global_embed(global_cond.to(dtype))

        context, context_mask = None, None
        if cross_attn_cond is not None:
            if self.cond_token_dim == 0:
                raise ValueError("cross_attn_cond given but the model has cond_token_dim=0")
            if cross_attn_cond.shape[-1] != self.cond_token_dim:
                raise ValueError(
                    f"cross_attn_cond width {cross_attn_cond.shape[-1]} != cond_token_dim "
                    f"{self.cond_token_dim}"
                )
            context = self.to_cond_embed(cross_attn_cond.to(dtype))
            if self.use_cross_attn_mask and cross_attn_mask is not None:
                context_mask = cross_attn_mask.to(device=x.device, dtype=torch.bool)

        x = self.preprocess_conv(x) + x
        out = self.transformer(
            x.transpose(1, 2),
            prepend_embeds=global_embed[:, None, :],
            context=context,
            context_mask=context_mask,
        )
        out = out[:, 1:, :].transpose(1, 2)
        return self.postprocess_conv(out) + out
