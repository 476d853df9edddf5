"""Oobleck encoder/decoder: shapes, latent rate, parameter counts, reference key layout."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from musicdiff.models.autoencoder import AudioAutoencoder, OobleckDecoder, OobleckEncoder, SnakeBeta, VAEBottleneck

from .conftest import load_autoencoder_cfg


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_sa2_parameter_count_on_meta_device():
    with torch.device("meta"):
        ae = instantiate(load_autoencoder_cfg("oobleck_sa2").autoencoder)
    total = _count(ae)
    assert abs(total - 157e6) / 157e6 < 0.01, total  # SA2: ~157M (stable-audio-tools' config: 156.1M)
    assert abs(_count(ae.encoder) - 78e6) / 78e6 < 0.01  # about 78M per half
    assert abs(_count(ae.decoder) - 78e6) / 78e6 < 0.01
    assert next(ae.parameters()).device.type == "meta"


def test_sa2_latent_rate_and_shapes_on_meta_device():
    with torch.device("meta"):
        ae = instantiate(load_autoencoder_cfg("oobleck_sa2").autoencoder)
        audio = torch.zeros(1, 2, 44100)  # 1 s of 44.1 kHz stereo
        z = ae.encode(audio)
        y = ae.decode(z)
    assert ae.downsampling_ratio == 2048 and ae.latent_rate == pytest.approx(21.53, abs=0.01)
    assert z.shape == (1, 64, math.ceil(44100 / 2048))  # ~21.5 frames × 64 (padded to 22)
    assert y.shape == (1, 2, 22 * 2048)


def test_tiny_round_trip_shapes(tiny_autoencoder):
    ae = tiny_autoencoder
    audio = torch.randn(3, 2, 4000)
    z, info = ae.encode_with_info(audio)
    assert z.shape == (3, 16, 63) and ae.latent_rate == 250  # ceil(4000 / 64)
    assert set(info) >= {"kl", "mean", "scale", "std"} and info["kl"].dim() == 0
    assert ae.decode(z).shape == (3, 2, 63 * 64)
    assert ae(audio[..., :1000]).shape == (3, 2, 1000)  # padded to 1024 internally, trimmed back


def test_deterministic_encode_without_sampling(tiny_autoencoder):
    audio = torch.randn(1, 2, 2048)
    assert torch.equal(tiny_autoencoder.encode(audio, sample=False), tiny_autoencoder.encode(audio, sample=False))
    assert not torch.equal(tiny_autoencoder.encode(audio), tiny_autoencoder.encode(audio))


def test_reference_key_layout():
    enc = OobleckEncoder(in_channels=2, channels=4, latent_dim=8, c_mults=[1, 2], strides=[2, 4])
    dec = OobleckDecoder(out_channels=2, channels=4, latent_dim=4, c_mults=[1, 2], strides=[2, 4])
    keys = dict(enc.state_dict())
    # stable-audio-tools: layers.0.weight_g [4,1,1], weight_v [4,2,7]; block 1 = layers.1.layers.{0,1,2}=res units
    assert keys["layers.0.parametrizations.weight.original0"].shape == (4, 1, 1)
    assert keys["layers.0.parametrizations.weight.original1"].shape == (4, 2, 7)
    assert keys["layers.1.layers.0.layers.0.alpha"].shape == (4,)
    assert keys["layers.1.layers.4.parametrizations.weight.original1"].shape == (4, 4, 4)  # kernel 2·stride
    assert keys["layers.4.parametrizations.weight.original1"].shape == (8, 8, 3)  # final conv3 to 2·D
    dkeys = dict(dec.state_dict())
    assert dkeys["layers.0.parametrizations.weight.original1"].shape == (8, 4, 7)
    assert dkeys["layers.1.layers.1.parametrizations.weight.original1"].shape == (8, 4, 8)  # transposed, stride 4
    assert "layers.4.bias" not in dkeys  # final conv has no bias


def test_snake_beta_identity_at_small_input_and_known_value():
    act = SnakeBeta(3)
    x = torch.tensor([[[0.5], [1.0], [-2.0]]])
    expected = x + torch.sin(x) ** 2  # alpha = beta = exp(0) = 1
    assert torch.allclose(act(x), expected, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"strides": [3, 4]}, "even"),
    ({"c_mults": [1]}, "same non-zero length"),
])
def test_bad_architecture_raises(kwargs, match):
    args = {"channels": 4, "latent_dim": 8, "c_mults": [1, 2], "strides": [2, 4], **kwargs}
    with pytest.raises(ValueError, match=match):
        OobleckEncoder(**args)


def test_mismatched_dims_raise():
    enc = OobleckEncoder(channels=4, latent_dim=8, c_mults=[1], strides=[2])
    dec = OobleckDecoder(channels=4, latent_dim=4, c_mults=[1], strides=[2])
    with pytest.raises(ValueError, match="2×latent_dim"):
        AudioAutoencoder(enc, dec, VAEBottleneck(), 16000, 2, latent_dim=8)
    with pytest.raises(ValueError, match="downsampling_ratio"):
        AudioAutoencoder(enc, dec, VAEBottleneck(), 16000, 2, latent_dim=4, downsampling_ratio=4)
    ae = AudioAutoencoder(enc, dec, VAEBottleneck(), 16000, 2, latent_dim=4)
    with pytest.raises(ValueError, match="expected audio"):
        ae.encode(torch.zeros(1, 1, 8))
