"""Building blocks of the Oobleck encoder/decoder (SA2 §3.1, after DAC / RAVE).

Every convolution is weight-normalised (``torch.nn.utils.parametrizations.weight_norm``). The module
tree mirrors stable-audio-tools so checkpoints map by a key rename only:

==========================================  ==============================================
stable-audio-tools key                      musicdiff key
==========================================  ==============================================
``...weight_g``                             ``...parametrizations.weight.original0``
``...weight_v``                             ``...parametrizations.weight.original1``
==========================================  ==============================================

(all other names and every tensor shape are identical).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm
from torch.utils.checkpoint import checkpoint

from musicdiff.models.autoencoder.snake import SnakeBeta

DILATIONS = (1, 3, 9)  # residual-unit dilations of every block (SA2 / DAC)


def wn_conv1d(*args, **kwargs) -> nn.Module:
    """A weight-normalised ``nn.Conv1d``."""
    return weight_norm(nn.Conv1d(*args, **kwargs))


def wn_conv_transpose1d(*args, **kwargs) -> nn.Module:
    """A weight-normalised ``nn.ConvTranspose1d``."""
    return weight_norm(nn.ConvTranspose1d(*args, **kwargs))


def activation(channels: int, use_snake: bool) -> nn.Module:
    """SnakeBeta (SA2) or ELU (the original Oobleck default)."""
    return SnakeBeta(channels) if use_snake else nn.ELU()


class ResidualUnit(nn.Module):
    """``x + conv1x1(act(conv7_dilated(act(x))))`` (DAC residual unit).

    Args:
        channels: input = output channels.
        dilation: dilation of the kernel-7 convolution (1, 3 or 9).
        use_snake: SnakeBeta instead of ELU.
        checkpointing: recompute activations in backward to save memory (training only).
    """

    def __init__(self, channels: int, dilation: int, use_snake: bool = True, checkpointing: bool = False) -> None:
        super().__init__()
        self.dilation = dilation
        self.checkpointing = checkpointing
        padding = dilation * (7 - 1) // 2
        self.layers = nn.Sequential(
            activation(channels, use_snake),
            wn_conv1d(channels, channels, kernel_size=7, dilation=dilation, padding=padding),
            activation(channels, use_snake),
            wn_conv1d(channels, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return x + checkpoint(self.layers, x, use_reentrant=False)
        return x + self.layers(x)


class EncoderBlock(nn.Module):
    """Three residual units (dilations 1/3/9), activation, strided conv (kernel ``2·stride``).

    Args:
        in_channels: channels of the input.
        out_channels: channels after the downsampling conv.
        stride: downsampling factor (even).
        use_snake: SnakeBeta instead of ELU.
        checkpointing: gradient checkpointing of the residual units.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_snake: bool = True,
                 checkpointing: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.layers = nn.Sequential(
            *[ResidualUnit(in_channels, d, use_snake, checkpointing) for d in DILATIONS],
            activation(in_channels, use_snake),
            wn_conv1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                      padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DecoderBlock(nn.Module):
    """Activation, transposed conv (kernel ``2·stride``), three residual units (dilations 1/3/9).

    Args:
        in_channels: channels of the input.
        out_channels: channels after the upsampling conv.
        stride: upsampling factor (even).
        use_snake: SnakeBeta instead of ELU.
        checkpointing: gradient checkpointing of the residual units.
        use_nearest_upsample: nearest-neighbour ×stride then a bias-free stride-1 conv (kernel
            ``2·stride``, "same" padding) instead of the transposed conv (stable-audio-tools layout).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, use_snake: bool = True,
                 checkpointing: bool = False, use_nearest_upsample: bool = False) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        if use_nearest_upsample:
            upsample: nn.Module = nn.Sequential(
                nn.Upsample(scale_factor=stride, mode="nearest"),
                wn_conv1d(in_channels, out_channels, kernel_size=2 * stride, stride=1, bias=False, padding="same"))
        else:
            upsample = wn_conv_transpose1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                                           padding=math.ceil(stride / 2))
        self.layers = nn.Sequential(
            activation(in_channels, use_snake),
            upsample,
            *[ResidualUnit(out_channels, d, use_snake, checkpointing) for d in DILATIONS],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
