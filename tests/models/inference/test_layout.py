"""Channels-last (NWC) inference layout: the same numbers as the [B, C, T] path, where it applies."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import musicdiff.models.inference.layout as layout
from musicdiff.models.autoencoder import AudioAutoencoder, OobleckDecoder, OobleckEncoder, VAEBottleneck
from musicdiff.models.autoencoder.blocks import wn_conv1d
from musicdiff.models.inference import fast_inference
from musicdiff.models.inference.layout import conv1d_forward, to_ncw, to_nwc, upsample_forward
from musicdiff.models.inference.polyphase import polyphase_conv_transpose1d, polyphase_conv_transpose1d_nwc


@pytest.mark.parametrize("kw", [dict(kernel_size=7, padding=3), dict(kernel_size=7, dilation=3, padding=9),
                                dict(kernel_size=8, stride=4, padding=2), dict(kernel_size=4, padding="same"),
                                dict(kernel_size=3, groups=2, padding=1, bias=False), dict(kernel_size=1),
                                dict(kernel_size=1, bias=False)])
def test_conv_runs_nwc_inputs(kw):
    torch.manual_seed(0)
    conv = nn.Conv1d(6, 4, **kw)
    fast = conv1d_forward(conv)
    x = torch.randn(2, 6, 40)
    with torch.no_grad():
        ref, out = conv(x), fast(to_nwc(x))
        assert torch.equal(fast(x), ref)  # 3-D inputs: the module's own path
    assert out.ndim == 4 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(to_ncw(out), ref, rtol=1e-5, atol=1e-6)


def test_upsample_and_polyphase_nwc():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 9, generator=g)
    up = nn.Upsample(scale_factor=4, mode="nearest")
    assert torch.equal(to_ncw(upsample_forward(up)(to_nwc(x))), up(x)) and up(x).shape == (2, 5, 36)
    w, b = torch.randn(5, 3, 8, generator=g), torch.randn(3, generator=g)
    out = polyphase_conv_transpose1d_nwc(to_nwc(x), w, b, 4)
    assert out.shape == (2, 3, 1, 36) and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(to_ncw(out), polyphase_conv_transpose1d(x, w, b, 4), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(to_ncw(out), F.conv_transpose1d(x, w, b, stride=4, padding=2), rtol=1e-5, atol=1e-5)


def _counting_functional(counts):
    def conv2d(*args, **kwargs):
        counts["conv2d"] += 1
        return F.conv2d(*args, **kwargs)

    return types.SimpleNamespace(**{**{k: getattr(F, k) for k in dir(F) if not k.startswith("__")}, "conv2d": conv2d})


@pytest.mark.parametrize("use_snake", [True, False])
@pytest.mark.parametrize("nearest", [False, True])
def test_autoencoder_mixes_layouts_and_matches_plain_model(monkeypatch, use_snake, nearest):
    torch.manual_seed(0)
    # widths 8/16/32/64 over 256 → 128 → 32 → 16 frames: the outer layers go NWC, the inner ones stay NCW
    ae = AudioAutoencoder(OobleckEncoder(2, 8, 16, c_mults=[1, 2, 4], strides=[2, 4, 2], use_snake=use_snake),
                          OobleckDecoder(2, 8, 8, c_mults=[1, 2, 4], strides=[2, 4, 2], use_snake=use_snake,
                                         use_nearest_upsample=nearest),
                          VAEBottleneck(), sample_rate=16000, io_channels=2, latent_dim=8).eval()
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    audio = torch.randn(2, 2, 256)
    counts = {"conv2d": 0}
    monkeypatch.setattr(layout, "F", _counting_functional(counts))
    with torch.inference_mode():
        z_ref = ae.encode(audio, sample=False)  # the plain model: no NWC layer
        y_ref = ae.decode(z_ref)
        assert counts["conv2d"] == 0
        with fast_inference(ae):
            z = ae.encode(audio, sample=False)
            enc_nwc = counts["conv2d"]
            y = ae.decode(z)
    n_convs = sum(isinstance(m, nn.Conv1d) for m in ae.modules()) // 2
    assert 0 < enc_nwc < n_convs  # some layers NWC, some not
    assert z.shape == (2, 8, 16) and y.shape == (2, 2, 256) and y.is_contiguous()
    torch.testing.assert_close(z, z_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)


def test_pointwise_out_buffer_and_training_stays_3d(monkeypatch):
    conv = wn_conv1d(4, 4, kernel_size=3, padding=1)
    assert set(conv.state_dict()) == {"bias", "parametrizations.weight.original0",
                                      "parametrizations.weight.original1"}
    with torch.no_grad(), pytest.raises(ValueError, match="out= is for pointwise"):
        conv1d_forward(conv)(torch.randn(1, 4, 8), out=torch.empty(1, 4, 8))
    pointwise, x = wn_conv1d(4, 4, kernel_size=1), to_nwc(torch.randn(1, 4, 8))
    buf = torch.empty_like(x)
    with torch.no_grad():
        y = conv1d_forward(pointwise)(x, out=buf)
        assert y.data_ptr() == buf.data_ptr()  # written into the given buffer
        torch.testing.assert_close(to_ncw(y), pointwise(to_ncw(x)), rtol=1e-5, atol=1e-6)
    enc = OobleckEncoder(2, 4, 8, c_mults=[1], strides=[2])
    counts = {"conv2d": 0}
    monkeypatch.setattr(layout, "F", _counting_functional(counts))
    with fast_inference(enc):
        enc(torch.randn(1, 2, 64)).sum().backward()  # training inside the switch: [B, C, T] throughout
    assert counts["conv2d"] == 0
    assert all(p.grad is not None for p in enc.parameters())
