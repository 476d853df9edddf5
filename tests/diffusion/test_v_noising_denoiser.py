"""Tests of the v-objective schedule and the VDenoiser wrapper."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers.kdiffusion import load_k_diffusion

from musicdiff.diffusion import (
    VDenoiser,
    add_noise,
    alpha_sigma_to_t,
    sigma_to_t,
    t_to_alpha_sigma,
    t_to_sigma,
)


def test_schedule_identities():
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    alpha, sigma = t_to_alpha_sigma(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t))
    torch.testing.assert_close(alpha_sigma_to_t(alpha, sigma), t)
    inner = t[1:-1]
    torch.testing.assert_close(sigma_to_t(t_to_sigma(inner)), inner)
    torch.testing.assert_close(t_to_sigma(inner), sigma[1:-1] / alpha[1:-1])
    assert float(t_to_alpha_sigma(torch.tensor(0.0))[1]) == 0.0
    assert math.isclose(float(t_to_alpha_sigma(torch.tensor(1.0))[0]), 0.0, abs_tol=1e-7)


def test_add_noise_and_v_target():
    g = torch.Generator().manual_seed(0)
    x0, eps, t = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g), torch.rand(4, generator=g)
    x_t, v = add_noise(x0, eps, t)
    a, s = (c[:, None, None] for c in t_to_alpha_sigma(t))
    torch.testing.assert_close(x_t, a * x0 + s * eps)
    torch.testing.assert_close(a * x_t - s * v, x0)  # x0 and eps are recoverable from (x_t, v)
    torch.testing.assert_close(s * x_t + a * v, eps)


class OracleV(torch.nn.Module):
    """Returns the exact v for a known x0: v = (alpha·x_t − x0)/sigma."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, x, t, **cond):
        a, s = (c[:, None, None] for c in t_to_alpha_sigma(t))
        return (a * x - self.x0) / s


def test_vdenoiser_recovers_x0_with_ideal_model():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 2, 7, dtype=torch.float64, generator=g)
    eps = torch.randn(3, 2, 7, dtype=torch.float64, generator=g)
    sigma = torch.tensor([0.05, 1.0, 300.0], dtype=torch.float64)
    den = VDenoiser(OracleV(x0))
    torch.testing.assert_close(den(x0 + sigma[:, None, None] * eps, sigma), x0)


def test_vdenoiser_gaussian_closed_form():
    """For x0 ~ N(0, s²) the ideal denoiser is s²/(s²+σ²)·x (k-diffusion/EDM sanity problem)."""
    s2 = 0.25

    class IdealGaussianV(torch.nn.Module):
        def forward(self, x, t, **cond):
            a, s = (c[:, None, None] for c in t_to_alpha_sigma(t))
            # E[x0 | x_t] for VP x_t = a x0 + s eps, then v = (a x_t − x0_hat)/s
            x0_hat = a * s2 / (a**2 * s2 + s**2) * x
            return (a * x - x0_hat) / s

    x = torch.randn(5, 1, 4, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.5, 1.0, 10.0, 100.0], dtype=torch.float64)
    out = VDenoiser(IdealGaussianV())(x, sigma)
    torch.testing.assert_close(out, s2 / (s2 + sigma[:, None, None] ** 2) * x)


def test_vdenoiser_scalings_match_k_diffusion():
    kd = load_k_diffusion().external
    sigma = torch.tensor([0.01, 0.3, 1.0, 7.0, 500.0])

    class Inner(torch.nn.Module):
        def forward(self, x, t):
            return x * 0 + 1

    ref = kd.VDenoiser(Inner())
    for mine, theirs in zip(VDenoiser.get_scalings(sigma), ref.get_scalings(sigma)):
        torch.testing.assert_close(mine, theirs)
    torch.testing.assert_close(sigma_to_t(sigma), ref.sigma_to_t(sigma))
