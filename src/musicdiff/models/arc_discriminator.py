"""The ARC discriminator: the first blocks of the pre-trained DiT plus a small convolutional head.

Adversarial Relativistic-Contrastive post-training (ARC; Novack et al., "Fast Text-to-Audio
Generation with Adversarial Post-Training", arXiv 2505.08175 §3.2) initialises the discriminator
from the pre-trained diffusion model itself: a copy of the DiT is run on a re-noised latent
``x_t = (1 − t)·x0 + t·eps`` with the prompt's conditioning, its hidden states after block
``layer`` (the prepended global token included, as stable-audio-tools' ``exit_layer_ix``) are
read out, and a 1-D convolutional head scores them (stable-audio-tools ``models/arc.py``
``ConvDiscriminator``: four stride-2 convolutions with GroupNorm and SiLU, then a 1-channel
convolution). Blocks after ``layer`` and the output projection are dropped.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from musicdiff.models.dit.rotary import rotary_cos_sin


class ConvScoreHead(nn.Module):
    """Scores ``[B, C, N]`` hidden states with strided 1-D convolutions (SAT ``ConvDiscriminator``).

    Args:
        channels: hidden width ``C`` (the DiT width).
        downsamples: stride-2 convolutions (SAT: 4, i.e. ×16 shorter).
        num_groups: GroupNorm groups (SAT: 32; must divide ``channels``).
        soft_clip_scale: if set, scores are ``s·tanh(score/s)``.
    """

    def __init__(self, channels: int, downsamples: int = 4, num_groups: int = 32,
                 soft_clip_scale: float | None = None) -> None:
        super().__init__()
        if channels % num_groups:
            raise ValueError(f"num_groups {num_groups} must divide the DiT width {channels}")
        layers: list[nn.Module] = []
        for _ in range(downsamples):
            layers += [nn.Conv1d(channels, channels, kernel_size=4, stride=2, padding=1),
                       nn.GroupNorm(num_groups, channels), nn.SiLU()]
        layers.append(nn.Conv1d(channels, 1, kernel_size=4, stride=1, padding=0))
        self.layers = nn.Sequential(*layers)
        self.downsamples = downsamples
        self.soft_clip_scale = soft_clip_scale

    def min_length(self) -> int:
        """Shortest input the head accepts (the last convolution needs 4 frames)."""
        n = 4
        for _ in range(self.downsamples):
            n = 2 * n
        return n

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``[B, C, N] -> [B, 1, N']`` scores (one per remaining position)."""
        if h.shape[-1] < self.min_length():
            raise ValueError(f"the ARC discriminator head needs >= {self.min_length()} positions, got {h.shape[-1]} "
                             f"(use fewer downsamples or longer windows)")
        out = self.layers(h)
        if self.soft_clip_scale is not None:
            out = self.soft_clip_scale * torch.tanh(out / self.soft_clip_scale)
        return out


class ARCDiscriminator(nn.Module):
    """``D(x_t, t, cross_attn_cond, global_cond) -> scores [B, 1, N']`` from a copy of the DiT's first blocks.

    Args:
        dit: the pre-trained :class:`~musicdiff.models.dit.DiffusionTransformer` (copied; the copy
            keeps blocks ``0 … layer``).
        layer: index of the block whose output is scored (SAT ``dit_hidden_layer``).
        downsamples: stride-2 convolutions of the head.
        num_groups: GroupNorm groups of the head.
        soft_clip_scale: optional soft clipping of the scores.
    """

    def __init__(self, dit: nn.Module, layer: int, downsamples: int = 4, num_groups: int = 32,
                 soft_clip_scale: float | None = None) -> None:
        super().__init__()
        depth = len(dit.transformer.layers)
        if not 0 <= layer < depth:
            raise ValueError(f"discriminator layer {layer} is not a block of the {depth}-block DiT")
        trunk = copy.deepcopy(dit)
        trunk.transformer.layers = trunk.transformer.layers[: layer + 1]
        trunk.transformer.project_out = nn.Identity()
        trunk.postprocess_conv = nn.Identity()
        trunk.gradient_checkpointing = False
        self.trunk = trunk
        self.layer = int(layer)
        self.head = ConvScoreHead(dit.width, downsamples, num_groups, soft_clip_scale)

    def hidden_states(self, x: torch.Tensor, t: torch.Tensor, cross_attn_cond: torch.Tensor | None = None,
                      global_cond: torch.Tensor | None = None,
                      cross_attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Output of block ``layer`` as ``[B, width, 1 + L]`` (the prepended global token first).

        The DiT's forward up to that block: timestep (+ global) embedding as the prepended token,
        projected cross-attention tokens, the 1×1 pre-convolution, rotary positions.
        """
        dit = self.trunk
        b = x.shape[0]
        dtype = dit.preprocess_conv.weight.dtype
        x = x.to(dtype)
        t = torch.as_tensor(t, device=x.device, dtype=dtype).reshape(-1).expand(b)
        global_embed = dit.to_timestep_embed(dit.timestep_features(t[:, None]))
        if global_cond is not None:
            global_embed = global_embed + dit.to_global_embed(global_cond.to(dtype))
        context = dit.to_cond_embed(cross_attn_cond.to(dtype)) if cross_attn_cond is not None else None
        mask = None
        if context is not None and dit.use_cross_attn_mask and cross_attn_mask is not None:
            mask = cross_attn_mask.to(device=x.device, dtype=torch.bool)
        x = dit.preprocess_conv(x) + x
        tr = dit.transformer
        h = torch.cat([global_embed[:, None, :], tr.project_in(x.transpose(1, 2))], dim=1)
        freqs = rotary_cos_sin(tr.rotary_pos_emb(h.shape[1])) if tr.rotary_pos_emb is not None else None
        for block in tr.layers:
            h = block(h, context, mask, freqs)
        return h.transpose(1, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cross_attn_cond: torch.Tensor | None = None,
                cross_attn_mask: torch.Tensor | None = None, global_cond: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of flow samples ``x`` at times ``t`` under the conditioning (the DiT's keyword arguments)."""
        return self.head(self.hidden_states(x, t, cross_attn_cond, global_cond, cross_attn_mask))
