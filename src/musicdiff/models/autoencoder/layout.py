"""Channels-last ("NWC") inference layout for the Oobleck encoder and decoder on CPU.

oneDNN's convolutions are 2–3× faster on channels-last data when the signal is long and has few
channels (the outer, full-rate layers of the VAE, where most of its time goes), and slower when a
layer is weight-dominated (many channels, few frames). Without autograd on CPU the encoder and
decoder therefore pick a layout per top-level layer: a ``[B, C, T]`` signal travels as a
``[B, C, 1, T]`` tensor in ``torch.channels_last`` memory format through layers whose signal is at
least :data:`NWC_MIN_FRAMES_PER_CHANNEL` frames per channel long, and as ``[B, C, T]`` elsewhere;
one copy converts between them. The layers accept both: :class:`LayoutConv1d` runs a 4-D input
as the equivalent ``conv2d`` (kernel ``1 × k``), SnakeBeta and ELU are elementwise,
:class:`NearestUpsample1d` upsamples the last axis only, and the polyphase transposed convolution
has an NWC form. Results equal the ``[B, C, T]`` path's to float32 rounding (other summation
order inside the convolutions); training, ``torch.compile`` and other devices never see 4-D
tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musicdiff.models.fast_paths import eager_inference

__all__ = ["NWC_MIN_FRAMES_PER_CHANNEL", "LayoutConv1d", "NearestUpsample1d", "run_layers", "to_ncw", "to_nwc"]

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


def run_layers(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers(x)``, each top-level layer in its preferred layout (see module docstring)."""
    if not nwc_applies(x):
        return layers(x)
    for layer in layers:
        geometry = getattr(layer, "nwc_geometry", None)
        if geometry is not None:
            channels, frames = geometry(x.shape[-1])
            x = to_nwc(x) if frames >= NWC_MIN_FRAMES_PER_CHANNEL * channels else to_ncw(x)
        x = layer(x)
    return to_ncw(x)


class LayoutConv1d(nn.Conv1d):
    """``nn.Conv1d`` (same parameters and state dict) that also takes ``[B, C, 1, T]`` inputs."""

    def nwc_geometry(self, frames: int) -> tuple[int, int]:
        """Channels and frames of the signal this layer's compute scales with."""
        return self.in_channels, frames

    def is_pointwise(self) -> bool:
        """A kernel-1, stride-1, ungrouped, unpadded convolution (a per-frame matrix product)."""
        return self.kernel_size == (1,) and self.stride == (1,) and self.groups == 1 and self.padding in ((0,), "valid")

    def pointwise_nwc(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """A pointwise conv of NWC ``x`` as one ``[B·T, C_in] × [C_in, C_out]`` GEMM (oneDNN takes a
        slow path for it), optionally into ``out`` (NWC ``[B, C_out, 1, T]``, e.g. a dead buffer
        of the same size: no fresh allocation to page-fault in). The bias is added in place
        (``F.linear``'s addmm would copy its output once more)."""
        rows = x.permute(0, 2, 3, 1)
        weight = self.weight.squeeze(-1).t()
        if out is None:
            y = torch.matmul(rows, weight)
        else:
            y = torch.matmul(rows, weight, out=out.permute(0, 2, 3, 1))
        if self.bias is not None:
            y.add_(self.bias)
        return y.permute(0, 3, 1, 2)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``out``: NWC buffer for a pointwise conv of an NWC input (see :meth:`pointwise_nwc`)."""
        if out is not None and (x.ndim != 4 or not self.is_pointwise()):
            raise ValueError("out= is for pointwise convolutions of NWC inputs")
        if x.ndim != 4:
            return super().forward(x)
        if self.padding_mode != "zeros":
            raise ValueError(f"the NWC layout supports zero padding only, not {self.padding_mode!r}")
        if self.is_pointwise():
            return self.pointwise_nwc(x, out)
        padding = self.padding if isinstance(self.padding, str) else (0, self.padding[0])
        return F.conv2d(x, self.weight.unsqueeze(2), self.bias, stride=(1, self.stride[0]), padding=padding,
                        dilation=(1, self.dilation[0]), groups=self.groups)


class NearestUpsample1d(nn.Module):
    """Nearest-neighbour upsampling of the last (time) axis by ``scale_factor`` (3-D or NWC 4-D)."""

    def __init__(self, scale_factor: int) -> None:
        super().__init__()
        self.scale_factor = int(scale_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.scale_factor if x.ndim == 3 else (1, self.scale_factor)
        return F.interpolate(x, scale_factor=scale, mode="nearest")

    def extra_repr(self) -> str:
        return f"scale_factor={self.scale_factor}"
