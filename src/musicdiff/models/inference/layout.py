"""Channels-last ("NWC") inference layout for the Oobleck encoder and decoder on CPU.

oneDNN's convolutions are 2–3× faster on channels-last data when the signal is long and has few
channels (the outer, full-rate layers of the VAE, where most of its time goes), and slower when a
layer is weight-dominated (many channels, few frames). Without autograd on CPU the encoder and
decoder therefore pick a layout per top-level layer (:func:`run_layers`): a ``[B, C, T]`` signal
travels as a ``[B, C, 1, T]`` tensor in ``torch.channels_last`` memory format through layers whose
signal is at least :data:`NWC_MIN_FRAMES_PER_CHANNEL` frames per channel long, and as ``[B, C, T]``
elsewhere; one copy converts between them. Under :func:`musicdiff.models.inference.fast_inference`
the layers accept both: convolutions run a 4-D input as the equivalent ``conv2d`` (kernel
``1 × k``, :func:`conv1d_forward`), SnakeBeta and ELU are elementwise, the nearest upsampler scales
the last axis only (:func:`upsample_forward`), and the polyphase transposed convolution has an NWC
form. Results equal the ``[B, C, T]`` path's to float32 rounding (other summation order inside the
convolutions); training, ``torch.compile`` and other devices never see 4-D tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from musicdiff.models.autoencoder.blocks import DecoderBlock, EncoderBlock
from musicdiff.models.inference.eager import eager_inference

__all__ = ["NWC_MIN_FRAMES_PER_CHANNEL", "conv1d_forward", "run_layers", "to_ncw", "to_nwc", "upsample_forward"]

NWC_MIN_FRAMES_PER_CHANNEL = 4  # measured crossover: 32 ch × 131072 frames 3× faster, 1024 × 64 1.4× slower


def to_nwc(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, T]`` → ``[B, C, 1, T]`` channels-last (unchanged if already 4-D)."""
    return x if x.ndim == 4 else x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def to_ncw(x: torch.Tensor) -> torch.Tensor:
    """``[B, C, 1, T]`` → contiguous ``[B, C, T]`` (unchanged if already 3-D)."""
    return x if x.ndim == 3 else x.squeeze(2).contiguous()


def nwc_applies(x: torch.Tensor) -> bool:
    """Whether the adaptive layout is used for ``x``: eager CPU inference of a 3-D float signal."""
    return x.device.type == "cpu" and x.ndim == 3 and x.is_floating_point() and eager_inference()


def geometry(layer: nn.Module, frames: int) -> tuple[int, int] | None:
    """Channels and frames of the signal a top-level layer's compute scales with (None: keep the layout)."""
    if isinstance(layer, EncoderBlock):
        return layer.in_channels, frames  # its residual units run before the downsampling
    if isinstance(layer, DecoderBlock):
        return layer.out_channels, frames * layer.stride  # its residual units run after the upsampling
    if isinstance(layer, nn.Conv1d):
        return layer.in_channels, frames
    return None


def run_layers(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers(x)``, each top-level layer in its preferred layout (see module docstring)."""
    if not nwc_applies(x):
        return layers(x)
    for layer in layers:
        shape = geometry(layer, x.shape[-1])
        if shape is not None:
            channels, frames = shape
            x = to_nwc(x) if frames >= NWC_MIN_FRAMES_PER_CHANNEL * channels else to_ncw(x)
        x = layer(x)
    return to_ncw(x)


def _is_pointwise(conv: nn.Conv1d) -> bool:
    """A kernel-1, stride-1, ungrouped, unpadded convolution (a per-frame matrix product)."""
    return conv.kernel_size == (1,) and conv.stride == (1,) and conv.groups == 1 and conv.padding in ((0,), "valid")


def _pointwise_nwc(conv: nn.Conv1d, x: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """A pointwise conv of NWC ``x`` as one ``[B·T, C_in] × [C_in, C_out]`` GEMM (oneDNN takes a slow
    path for it), optionally into ``out`` (NWC ``[B, C_out, 1, T]``, e.g. a dead buffer of the same
    size: no fresh allocation to page-fault in). The bias is added in place (``F.linear``'s addmm
    would copy its output once more)."""
    rows = x.permute(0, 2, 3, 1)
    weight = conv.weight.squeeze(-1).t()
    y = torch.matmul(rows, weight) if out is None else torch.matmul(rows, weight, out=out.permute(0, 2, 3, 1))
    if conv.bias is not None:
        y.add_(conv.bias)
    return y.permute(0, 3, 1, 2)


def conv1d_forward(conv: nn.Conv1d) -> Callable[..., torch.Tensor]:
    """Replacement ``forward`` of ``conv`` that also takes ``[B, C, 1, T]`` channels-last inputs.

    ``out``: NWC buffer for a pointwise conv of an NWC input (see :func:`_pointwise_nwc`).
    """

    def forward(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if out is not None and (x.ndim != 4 or not _is_pointwise(conv)):
            raise ValueError("out= is for pointwise convolutions of NWC inputs")
        if x.ndim != 4:
            return nn.Conv1d.forward(conv, x)
        if conv.padding_mode != "zeros":
            raise ValueError(f"the NWC layout supports zero padding only, not {conv.padding_mode!r}")
        if _is_pointwise(conv):
            return _pointwise_nwc(conv, x, out)
        padding = conv.padding if isinstance(conv.padding, str) else (0, conv.padding[0])
        return F.conv2d(x, conv.weight.unsqueeze(2), conv.bias, stride=(1, conv.stride[0]), padding=padding,
                        dilation=(1, conv.dilation[0]), groups=conv.groups)

    return forward


def upsample_forward(up: nn.Upsample) -> Callable[[torch.Tensor], torch.Tensor]:
    """Replacement ``forward`` of a 1-D nearest ``nn.Upsample`` that also takes NWC inputs (time axis only)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            return nn.Upsample.forward(up, x)
        return F.interpolate(x, scale_factor=(1.0, float(up.scale_factor)), mode=up.mode)

    return forward
