"""Polyphase form of the decoder's transposed convolution: the same outputs, used only where it pays."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import musicdiff.models.inference.polyphase as poly
from musicdiff.models.autoencoder.blocks import wn_conv_transpose1d
from musicdiff.models.inference.polyphase import polyphase_conv_transpose1d, transposed_conv_forward


@pytest.mark.parametrize("c_in,c_out,stride,length,bias", [(4, 3, 2, 9, True), (6, 5, 4, 17, False),
                                                            (8, 4, 8, 5, True), (3, 2, 2, 1, True)])
def test_matches_transposed_conv(c_in, c_out, stride, length, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, c_in, length, generator=g)
    w = torch.randn(c_in, c_out, 2 * stride, generator=g)
    b = torch.randn(c_out, generator=g) if bias else None
    ref = F.conv_transpose1d(x, w, b, stride=stride, padding=stride // 2)
    out = polyphase_conv_transpose1d(x, w, b, stride)
    assert out.shape == ref.shape == (2, c_out, length * stride)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_rejects_other_shapes():
    with pytest.raises(ValueError, match="kernel 2\\*stride"):
        polyphase_conv_transpose1d(torch.randn(1, 2, 5), torch.randn(2, 3, 5), None, 2)
    with pytest.raises(ValueError, match="even stride"):
        polyphase_conv_transpose1d(torch.randn(1, 2, 5), torch.randn(2, 3, 6), None, 3)


def test_forward_takes_polyphase_only_without_autograd_on_long_inputs(monkeypatch):
    torch.manual_seed(0)
    conv = wn_conv_transpose1d(4, 3, kernel_size=8, stride=4, padding=2)
    assert set(conv.state_dict()) == {"bias", "parametrizations.weight.original0",
                                      "parametrizations.weight.original1"}  # the layout SAT import expects
    plain = nn.ConvTranspose1d(4, 3, kernel_size=8, stride=4, padding=2)
    plain.load_state_dict({"weight": conv.weight.detach(), "bias": conv.bias.detach()})
    calls = []
    real = poly.polyphase_conv_transpose1d
    monkeypatch.setattr(poly, "polyphase_conv_transpose1d", lambda *a: calls.append(1) or real(*a))
    fast = transposed_conv_forward(conv)
    long_x, short_x = torch.randn(1, 4, 3 * 8), torch.randn(1, 4, 3 * 8 - 1)  # threshold: out_channels * kernel
    with torch.enable_grad():
        ref = fast(long_x)
    assert not calls and ref.requires_grad  # autograd: the module's own path
    with torch.no_grad():
        out = fast(long_x)
        assert calls == [1]
        fast(short_x)
        assert calls == [1]
        torch.testing.assert_close(out, plain(long_x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-5, atol=1e-6)
    odd = nn.ConvTranspose1d(4, 3, kernel_size=6, stride=3, padding=2)  # odd stride: native path
    with torch.no_grad():
        torch.testing.assert_close(transposed_conv_forward(odd)(long_x), odd(long_x), rtol=0, atol=0)
    assert calls == [1]
