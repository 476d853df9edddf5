"""GAN objectives, feature matching, KL."""

from __future__ import annotations

import math

import pytest
import torch

from musicdiff.losses import HingeGANLoss, KLLoss, LeastSquaresGANLoss, feature_matching, gaussian_kl


def test_hinge_known_values():
    h = HingeGANLoss()
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    # relu(1-2)=0, relu(1-0.5)=0.5 → 0.25; relu(1-2)=0, relu(1+0)=1 → 0.5
    assert h.discriminator_loss(real, fake).item() == pytest.approx(0.75)
    assert h.generator_loss(fake).item() == pytest.approx(1.0)


def test_least_squares_known_values():
    ls = LeastSquaresGANLoss()
    real, fake = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert ls.discriminator_loss(real, fake).item() == pytest.approx(0.5 + 0.5)
    assert ls.generator_loss(fake).item() == pytest.approx(0.5)


def test_feature_matching():
    a = [torch.ones(2, 3), torch.zeros(4)]
    b = [torch.full((2, 3), 3.0), torch.ones(4)]
    assert feature_matching(a, a).item() == 0.0
    assert feature_matching(a, b).item() == pytest.approx((2.0 + 1.0) / 2)
    with pytest.raises(ValueError):
        feature_matching(a, b[:1])


def test_kl_known_value_and_weight():
    mean, std = torch.zeros(1, 2, 5), torch.full((1, 2, 5), math.e ** 0.5)
    expected = 2 * (0 + math.e - 1 - 1)  # sum over D=2 of (mu^2 + s^2 - log s^2 - 1)
    assert gaussian_kl(mean, std).item() == pytest.approx(expected, rel=1e-5)
    assert KLLoss(1e-4)(mean, std).item() == pytest.approx(1e-4 * expected, rel=1e-5)
