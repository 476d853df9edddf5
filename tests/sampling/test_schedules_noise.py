"""Sigma schedules and noise samplers: parity with k-diffusion, validation, reproducibility."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.kdiffusion import load_k_diffusion

from musicdiff.sampling import noise, sigma_schedules

K = load_k_diffusion()


@pytest.mark.parametrize("n", [1, 2, 10, 100])
def test_schedules_match_k_diffusion(n):
    for rho in (0.5, 1.0, 2.0):
        ours = sigma_schedules.get_sigmas_polyexponential(n, 0.3, 500.0, rho)
        assert torch.equal(ours, K.sampling.get_sigmas_polyexponential(n, 0.3, 500.0, rho))
    for rho in (3.0, 7.0):
        ours = sigma_schedules.get_sigmas_karras(n, 0.3, 500.0, rho)
        assert torch.equal(ours, K.sampling.get_sigmas_karras(n, 0.3, 500.0, rho))
    assert torch.equal(sigma_schedules.get_sigmas_exponential(n, 0.3, 500.0), K.sampling.get_sigmas_exponential(n, 0.3, 500.0))


def test_schedule_shape_and_order():
    for fn in (sigma_schedules.get_sigmas_polyexponential, sigma_schedules.get_sigmas_karras, sigma_schedules.get_sigmas_exponential):
        s = fn(20, 0.3, 500.0)
        assert s.shape == (21,) and s[-1] == 0
        assert torch.all(s[:-1] > 0) and torch.all(s[1:] < s[:-1])
        assert s[0] == pytest.approx(500.0, rel=1e-5) and s[-2] == pytest.approx(0.3, rel=1e-5)
    # rho = 1 polyexponential is the exponential schedule
    torch.testing.assert_close(
        sigma_schedules.get_sigmas_polyexponential(30, 0.3, 500.0, 1.0), sigma_schedules.get_sigmas_exponential(30, 0.3, 500.0)
    )


@pytest.mark.parametrize("args", [(0, 0.3, 500.0), (10, 0.0, 500.0), (10, 5.0, 1.0), (2.5, 0.3, 1.0)])
def test_schedule_bad_input(args):
    with pytest.raises(ValueError):
        sigma_schedules.get_sigmas_karras(*args)


def test_brownian_tree_matches_k_diffusion():
    x = torch.zeros(3, 2, 5)
    for seed in (7, [1, 2, 3]):
        ours = noise.BrownianTreeNoiseSampler(x, 0.3, 500.0, seed=seed)
        ref = K.sampling.BrownianTreeNoiseSampler(x, 0.3, 500.0, seed=seed)
        for a, b in [(500.0, 300.0), (300.0, 10.0), (10.0, 0.3)]:
            torch.testing.assert_close(ours(torch.tensor(a), torch.tensor(b)), ref(torch.tensor(a), torch.tensor(b)))


def test_brownian_tree_per_item_seed_is_batch_independent():
    x = torch.zeros(3, 4, 6)
    batch = noise.BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=[5, 6, 7])
    single = noise.BrownianTreeNoiseSampler(x[1:2], 0.1, 10.0, seed=[6])
    a, b = batch(torch.tensor(10.0), torch.tensor(2.0)), single(torch.tensor(10.0), torch.tensor(2.0))
    torch.testing.assert_close(a[1:2], b)
    assert not torch.allclose(a[0], a[1])
    # unit variance increments
    big = noise.BrownianTreeNoiseSampler(torch.zeros(1, 20000), 0.1, 10.0, seed=0)
    assert big(torch.tensor(5.0), torch.tensor(1.0)).std().item() == pytest.approx(1.0, abs=0.05)


def test_gaussian_noise_sampler_reproducible():
    x = torch.zeros(2, 3, 4)
    a = noise.GaussianNoiseSampler(x, seed=[1, 2])
    b = noise.GaussianNoiseSampler(x, seed=[1, 2])
    first = a(None, None)
    torch.testing.assert_close(first, b(None, None))
    assert not torch.allclose(first, a(None, None))  # fresh noise per call
    single = noise.GaussianNoiseSampler(x[1:], seed=[2])
    torch.testing.assert_close(single(None, None), first[1:])
    with pytest.raises(ValueError, match="seeds"):
        noise.GaussianNoiseSampler(x, seed=[1, 2, 3])
