"""Oobleck encoder and decoder, the convolutional halves of the SA2 VAE (SA2 §3.1, Fig. 2).

Encoder: conv7 → ``len(strides)`` × EncoderBlock (channels ``channels · c_mults``) → act → conv3.
Decoder: mirror image with transposed convolutions; SA2 uses no final tanh. Module layout follows
stable-audio-tools' ``OobleckEncoder`` / ``OobleckDecoder`` (see ``blocks.py`` for the key renames).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from musicdiff.models.autoencoder.blocks import DecoderBlock, EncoderBlock, activation, wn_conv1d


def _check(channels: int, c_mults: Sequence[int], strides: Sequence[int]) -> tuple[list[int], list[int]]:
    c_mults, strides = [int(c) for c in c_mults], [int(s) for s in strides]
    if channels <= 0 or any(c <= 0 for c in c_mults):
        raise ValueError(f"channels and c_mults must be positive, got channels={channels}, c_mults={c_mults}")
    if len(c_mults) != len(strides) or not strides:
        raise ValueError(f"c_mults ({len(c_mults)}) and strides ({len(strides)}) need the same non-zero length")
    if any(s < 2 or s % 2 for s in strides):
        raise ValueError(f"strides must be even integers >= 2 (exact length T = L·prod(strides)), got {strides}")
    return c_mults, strides


class OobleckEncoder(nn.Module):
    """Audio ``[B, in_channels, T]`` → pre-bottleneck latents ``[B, latent_dim, T / prod(strides)]``.

    Args:
        in_channels: audio channels (2 for SA2).
        channels: base width (128 for SA2).
        latent_dim: output channels; for a VAE this is twice the latent size (mean and scale).
        c_mults: width multipliers per block (SA2: [1, 2, 4, 8, 16]).
        strides: downsampling per block (SA2: [2, 4, 4, 8, 8] → 2048).
        use_snake: SnakeBeta activations (SA2) instead of ELU.
        checkpointing: gradient checkpointing inside residual units.
    """

    def __init__(self, in_channels: int = 2, channels: int = 128, latent_dim: int = 128,
                 c_mults: Sequence[int] = (1, 2, 4, 8, 16), strides: Sequence[int] = (2, 4, 4, 8, 8),
                 use_snake: bool = True, checkpointing: bool = False) -> None:
        super().__init__()
        c_mults, strides = _check(channels, c_mults, strides)
        self.in_channels, self.latent_dim = in_channels, latent_dim
        self.strides = strides
        self.downsampling_ratio = math.prod(strides)
        widths = [channels * m for m in [1, *c_mults]]
        layers: list[nn.Module] = [wn_conv1d(in_channels, widths[0], kernel_size=7, padding=3)]
        for i, stride in enumerate(strides):
            layers.append(EncoderBlock(widths[i], widths[i + 1], stride, use_snake, checkpointing))
        layers += [activation(widths[-1], use_snake),
                   wn_conv1d(widths[-1], latent_dim, kernel_size=3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode ``x [B, C, T]`` (T a multiple of ``downsampling_ratio``)."""
        return self.layers(x)


class OobleckDecoder(nn.Module):
    """Latents ``[B, latent_dim, L]`` → audio ``[B, out_channels, L · prod(strides)]``.

    Args:
        out_channels: audio channels (2 for SA2).
        channels: base width (128 for SA2).
        latent_dim: input channels (64 for SA2).
        c_mults: width multipliers, listed encoder-side (the decoder walks them in reverse).
        strides: upsampling per block, listed encoder-side.
        use_snake: SnakeBeta activations (SA2) instead of ELU.
        final_tanh: squash the output with tanh (SA2: False).
        checkpointing: gradient checkpointing inside residual units.
        use_nearest_upsample: upsample by nearest-neighbour repetition + a stride-1 conv instead of a
            transposed conv (stable-audio-tools' option of the same name; SA2: False). No
            checkerboard tone at the latent rate, so small models train markedly faster.
    """

    def __init__(self, out_channels: int = 2, channels: int = 128, latent_dim: int = 64,
                 c_mults: Sequence[int] = (1, 2, 4, 8, 16), strides: Sequence[int] = (2, 4, 4, 8, 8),
                 use_snake: bool = True, final_tanh: bool = False, checkpointing: bool = False,
                 use_nearest_upsample: bool = False) -> None:
        super().__init__()
        c_mults, strides = _check(channels, c_mults, strides)
        self.out_channels, self.latent_dim = out_channels, latent_dim
        self.strides = strides
        self.upsampling_ratio = math.prod(strides)
        widths = [channels * m for m in [1, *c_mults]]
        layers: list[nn.Module] = [wn_conv1d(latent_dim, widths[-1], kernel_size=7, padding=3)]
        for i in range(len(strides), 0, -1):
            layers.append(DecoderBlock(widths[i], widths[i - 1], strides[i - 1], use_snake, checkpointing,
                                       use_nearest_upsample))
        layers += [
            activation(widths[0], use_snake),
            wn_conv1d(widths[0], out_channels, kernel_size=7, padding=3, bias=False),
            nn.Tanh() if final_tanh else nn.Identity(),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Decode ``z [B, latent_dim, L]`` to ``[B, out_channels, L · upsampling_ratio]``."""
        return self.layers(z)
