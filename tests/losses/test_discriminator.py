"""EnCodec MS-STFT discriminator: scales, shapes, losses, gradients, learning to separate."""

from __future__ import annotations

import pytest
import torch

from musicdiff.losses import EncodecDiscriminator, LeastSquaresGANLoss


def _small(**kw):
    return EncodecDiscriminator(in_channels=2, filters=8, n_ffts=[256, 128, 64, 32, 16],
                                hop_lengths=[64, 32, 16, 8, 4], win_lengths=[256, 128, 64, 32, 16], **kw)


def test_sa2_defaults_have_five_scales_of_64_filters():
    d = EncodecDiscriminator()
    assert d.num_scales == 5
    first = d.discriminators.discriminators[0]
    assert first.convs[0].conv.parametrizations.weight.original1.shape == (64, 4, 3, 9)  # 2·C (re, im) in
    assert first.conv_post.conv.parametrizations.weight.original1.shape == (1, 64, 3, 3)


def test_logits_and_features_shapes():
    d = _small()
    logits, feats = d(torch.randn(2, 2, 1024))
    assert len(logits) == len(feats) == 5
    assert all(lg.shape[:2] == (2, 1) for lg in logits)
    assert all(len(f) == 5 for f in feats)  # 4 inner convs + the square conv


def test_losses_and_gradient_routing():
    torch.manual_seed(0)
    d = _small()
    reals = torch.randn(2, 2, 1024)
    fakes = torch.randn(2, 2, 1024, requires_grad=True)
    adv, fm = d.generator_loss(reals, reals.clone())
    assert fm.item() == pytest.approx(0.0, abs=1e-7)
    adv, fm = d.generator_loss(reals, fakes)
    (adv + fm).backward()
    assert fakes.grad is not None and fakes.grad.abs().sum() > 0
    loss_d = d.discriminator_loss(reals, fakes.detach())
    assert loss_d.dim() == 0 and torch.isfinite(loss_d)


def test_discriminator_learns_to_separate_noise_from_tones():
    torch.manual_seed(0)
    d = _small(gan_loss=LeastSquaresGANLoss())
    opt = torch.optim.Adam(d.parameters(), lr=3e-3)
    t = torch.arange(512) / 16000
    reals = torch.sin(2 * torch.pi * 440 * t).expand(2, 2, -1).contiguous() * 0.5
    fakes = torch.randn(2, 2, 512) * 0.3
    first = d.discriminator_loss(reals, fakes).item()
    for _ in range(15):
        loss = d.discriminator_loss(reals, fakes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


def test_too_short_audio_raises():
    with pytest.raises(ValueError, match="shorter than the discriminator FFT"):
        EncodecDiscriminator()(torch.zeros(1, 2, 1000))
