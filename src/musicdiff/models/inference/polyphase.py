"""The decoder's upsampling transposed convolution as one ordinary convolution (inference).

A transposed convolution with stride ``s``, kernel ``2s`` and padding ``s/2`` (every Oobleck
decoder block) computes output sample ``m·s + r`` from input frames ``m`` and ``m - 1`` only, with
taps ``r`` and ``r + s`` of its kernel. Its ``s`` output phases are therefore an ordinary
kernel-2 convolution with ``s·C_out`` output channels (polyphase form), followed by interleaving
the phases in time. PyTorch's CPU transposed convolution is several times slower than its
ordinary convolution on long inputs, so without autograd the decoder's upsampler takes this route
(:func:`transposed_conv_forward`) where the input is long compared with the kernel (there the weight
rearrangement, done per call, is cheap): the same products, summed in another order (outputs
within ~1e-6 relative).
Autograd, ``torch.compile``, short inputs and other shapes take ``nn.ConvTranspose1d``'s own path;
``[B, C, 1, L]`` inputs are the channels-last layout of :mod:`musicdiff.models.inference.layout`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from musicdiff.models.inference.eager import eager_inference

__all__ = ["polyphase_conv_transpose1d", "polyphase_conv_transpose1d_nwc", "transposed_conv_forward"]


def polyphase_conv_transpose1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                               stride: int) -> torch.Tensor:
    """``F.conv_transpose1d(x, weight, bias, stride, padding=stride // 2)`` for kernel ``2·stride``
    and even ``stride``, computed as a kernel-2 convolution over ``stride`` phases."""
    s, h = stride, stride // 2
    c_in, c_out, k = weight.shape
    if k != 2 * s or s % 2 or x.ndim != 3 or x.shape[1] != c_in:
        raise ValueError(f"needs kernel 2*stride, even stride and [B, {c_in}, L] input; got kernel {k}, "
                         f"stride {s}, input {tuple(x.shape)}")
    b, _, n = x.shape
    # Output channel (o, r): tap 0 reads frame m - 1 with kernel tap r + s, tap 1 frame m with tap r.
    w = torch.stack([weight[:, :, s:], weight[:, :, :s]], -1).permute(1, 2, 0, 3).reshape(c_out * s, c_in, 2)
    phases = F.conv1d(x, w, None if bias is None else bias.repeat_interleave(s), padding=1)
    phases = phases.view(b, c_out, s, n + 1)  # phase r of frame m (frames -1 .. n-1 shifted by one)
    out = x.new_empty(b, c_out, n, s)
    # The padding s/2 shifts the output by half a frame: output phase r' < s/2 is phase r' + s/2 of
    # the same frame, r' >= s/2 is phase r' - s/2 of the next frame.
    out[..., :h] = phases[:, :, h:, :n].transpose(2, 3)
    out[..., h:] = phases[:, :, :h, 1:].transpose(2, 3)
    return out.view(b, c_out, n * s)


def polyphase_conv_transpose1d_nwc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                   stride: int) -> torch.Tensor:
    """:func:`polyphase_conv_transpose1d` for a channels-last ``[B, C_in, 1, L]`` input (see
    :mod:`musicdiff.models.inference.layout`); returns ``[B, C_out, 1, L·stride]`` channels-last.

    The phase-major channel order ``(r, o)`` makes the interleave two copies of contiguous runs."""
    s, h = stride, stride // 2
    c_in, c_out, k = weight.shape
    if k != 2 * s or s % 2 or x.ndim != 4 or x.shape[1] != c_in or x.shape[2] != 1:
        raise ValueError(f"needs kernel 2*stride, even stride and [B, {c_in}, 1, L] input; got kernel {k}, "
                         f"stride {s}, input {tuple(x.shape)}")
    b, n = x.shape[0], x.shape[-1]
    w = torch.stack([weight[:, :, s:], weight[:, :, :s]], -1).permute(2, 1, 0, 3).reshape(s * c_out, c_in, 1, 2)
    phases = F.conv2d(x, w, None if bias is None else bias.repeat(s), padding=(0, 1))
    phases = phases.permute(0, 2, 3, 1).contiguous().view(b, n + 1, s, c_out)  # a view when channels-last
    out = x.new_empty(b, n, s, c_out)
    out[:, :, :h] = phases[:, :n, h:]
    out[:, :, h:] = phases[:, 1:, :h]
    return out.view(b, 1, n * s, c_out).permute(0, 3, 1, 2)


def _polyphase_applies(conv: nn.ConvTranspose1d, x: torch.Tensor) -> bool:
    s = conv.stride[0]
    return (eager_inference() and x.ndim in (3, 4) and conv.groups == 1 and conv.dilation == (1,)
            and conv.output_padding == (0,) and conv.padding_mode == "zeros" and s % 2 == 0
            and conv.kernel_size == (2 * s,) and conv.padding == (s // 2,)
            and x.shape[-1] >= conv.out_channels * conv.kernel_size[0])


def transposed_conv_forward(conv: nn.ConvTranspose1d) -> Callable[..., torch.Tensor]:
    """Replacement ``forward`` of ``conv``: polyphase form where it applies, and channels-last inputs."""

    def forward(x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is None and _polyphase_applies(conv, x):
            poly = polyphase_conv_transpose1d_nwc if x.ndim == 4 else polyphase_conv_transpose1d
            return poly(x, conv.weight, conv.bias, conv.stride[0])
        if x.ndim == 4:  # channels-last layout, as the equivalent 2-D op
            if output_size is not None or conv.padding_mode != "zeros":
                raise ValueError("the NWC layout supports zero padding and no output_size only")
            return F.conv_transpose2d(x, conv.weight.unsqueeze(2), conv.bias, stride=(1, conv.stride[0]),
                                      padding=(0, conv.padding[0]), output_padding=(0, conv.output_padding[0]),
                                      groups=conv.groups, dilation=(1, conv.dilation[0]))
        return nn.ConvTranspose1d.forward(conv, x, output_size)

    return forward
