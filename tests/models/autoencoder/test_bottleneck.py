"""VAE bottleneck: reparameterisation, KL values."""

from __future__ import annotations

import math

import torch

from musicdiff.models.autoencoder import VAEBottleneck


def _scale_for_std(std: float) -> float:
    return math.log(math.expm1(std - 1e-4))  # inverse of softplus(scale) + 1e-4


def test_kl_zero_for_standard_normal_posterior():
    x = torch.cat([torch.zeros(2, 4, 10), torch.full((2, 4, 10), _scale_for_std(1.0))], dim=1)
    z, info = VAEBottleneck().encode(x)
    assert z.shape == (2, 4, 10)
    assert abs(info["kl"].item()) < 1e-5
    assert torch.allclose(info["std"], torch.ones(2, 4, 10), atol=1e-5)


def test_kl_known_value():
    # SAT convention: sum_d (mu^2 + s^2 - log s^2 - 1), mean over (batch, time); D=4, mu=1, s=2
    x = torch.cat([torch.ones(1, 4, 3), torch.full((1, 4, 3), _scale_for_std(2.0))], dim=1)
    _, info = VAEBottleneck().encode(x, sample=False)
    expected = 4 * (1 + 4 - math.log(4) - 1)
    assert abs(info["kl"].item() - expected) < 1e-3


def test_sampling_statistics_and_seed():
    mean, std = 0.5, 0.3
    x = torch.cat([torch.full((1, 8, 20000), mean), torch.full((1, 8, 20000), _scale_for_std(std))], dim=1)
    g = torch.Generator().manual_seed(0)
    z, _ = VAEBottleneck().encode(x, generator=g)
    assert abs(z.mean().item() - mean) < 0.01 and abs(z.std().item() - std) < 0.01
    z2, _ = VAEBottleneck().encode(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(z, z2)
    zm, _ = VAEBottleneck().encode(x, sample=False)
    assert torch.equal(zm, x[:, :8])
