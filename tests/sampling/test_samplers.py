"""Samplers: parity with k-diffusion and correctness on a Gaussian toy problem."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.kdiffusion import load_k_diffusion

from musicdiff.sampling import samplers, sigma_schedules
from musicdiff.sampling.noise import BrownianTreeNoiseSampler, GaussianNoiseSampler
from tests.sampling.stubs import GaussianDenoiser, MixtureDenoiser

K = load_k_diffusion()

SIGMAS = sigma_schedules.get_sigmas_polyexponential(12, 0.05, 80.0)
PAIRS = [
    ("sample_euler", {}),
    ("sample_heun", {}),
    ("sample_dpmpp_2m", {}),
    ("sample_dpmpp_2m_sde", {"eta": 1.0}),
    ("sample_dpmpp_2m_sde", {"eta": 0.7, "solver_type": "heun"}),
    ("sample_dpmpp_3m_sde", {"eta": 1.0}),
    ("sample_dpmpp_3m_sde", {"eta": 0.0}),
]


def _start(shape=(3, 2, 16), seed=0, sigma=SIGMAS[0]):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * sigma


@pytest.mark.filterwarnings("ignore:Should have t")
@pytest.mark.parametrize("name,opts", PAIRS)
def test_parity_with_k_diffusion(name, opts):
    model = MixtureDenoiser()
    x = _start()
    kwargs = dict(opts)
    if "sde" in name:
        ours_ns = BrownianTreeNoiseSampler(x, 0.05, 80.0, seed=[1, 2, 3])
        ref_ns = K.sampling.BrownianTreeNoiseSampler(x, 0.05, 80.0, seed=[1, 2, 3])
        ours = getattr(samplers, name)(model, x, SIGMAS, disable=True, noise_sampler=ours_ns, **kwargs)
        ref = getattr(K.sampling, name)(model, x, SIGMAS, disable=True, noise_sampler=ref_ns, **kwargs)
    else:
        ours = getattr(samplers, name)(model, x, SIGMAS, disable=True, **kwargs)
        ref = getattr(K.sampling, name)(model, x, SIGMAS, disable=True, **kwargs)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["sample_euler", "sample_heun"])
def test_churn_parity_with_k_diffusion(name):
    model, x = MixtureDenoiser(), _start()
    opts = {"s_churn": 2.0, "s_tmin": 0.1, "s_tmax": 50.0}
    torch.manual_seed(3)
    ours = getattr(samplers, name)(model, x, SIGMAS, disable=True, **opts)
    torch.manual_seed(3)
    ref = getattr(K.sampling, name)(model, x, SIGMAS, disable=True, **opts)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_callback_and_extra_args():
    seen, got_kwargs = [], []

    def model(x, sigma, **kw):
        got_kwargs.append(kw)
        return x * 0

    samplers.sample_dpmpp_2m(model, _start(), SIGMAS, extra_args={"cond": 1}, callback=seen.append, disable=True)
    assert [s["i"] for s in seen] == list(range(12))
    assert set(seen[0]) == {"x", "i", "sigma", "sigma_hat", "denoised"}
    assert all(kw == {"cond": 1} for kw in got_kwargs)


def test_ddim_eta0_equals_euler():
    model, x = MixtureDenoiser(), _start()
    ddim = samplers.sample_ddim(model, x, SIGMAS, disable=True)
    euler = samplers.sample_euler(model, x, SIGMAS, disable=True)
    torch.testing.assert_close(ddim, euler, rtol=1e-5, atol=1e-5)


def test_ddim_eta1_equals_euler_ancestral():
    model, x = MixtureDenoiser(), _start()
    ours = samplers.sample_ddim(model, x, SIGMAS, eta=1.0, disable=True, noise_sampler=GaussianNoiseSampler(x, seed=4))
    ref = K.sampling.sample_euler_ancestral(model, x, SIGMAS, disable=True, noise_sampler=GaussianNoiseSampler(x, seed=4))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="eta"):
        samplers.sample_ddim(model, x, SIGMAS, eta=-1.0)


def _gaussian_problem(n=8000, dims=4):
    mu = torch.tensor([0.5, -1.0, 0.0, 2.0])[:dims].reshape(1, dims, 1)
    s = torch.tensor([0.3, 1.0, 0.7, 0.2])[:dims].reshape(1, dims, 1)
    return GaussianDenoiser(mu, s), mu, s, torch.randn(n, dims, 1, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "name,opts",
    [
        ("sample_euler", {}),
        ("sample_heun", {}),
        ("sample_ddim", {}),
        ("sample_ddim", {"eta": 0.5}),
        ("sample_dpmpp_2m", {}),
        ("sample_dpmpp_2m_sde", {}),
        ("sample_dpmpp_3m_sde", {}),
    ],
)
def test_gaussian_toy_distribution(name, opts):
    den, mu, s, z = _gaussian_problem()
    sigmas = sigma_schedules.get_sigmas_polyexponential(60, 0.01, 80.0)
    x0 = getattr(samplers, name)(den, z * sigmas[0], sigmas, disable=True, **opts)
    torch.testing.assert_close(x0.mean(0, keepdim=True), mu, atol=0.04, rtol=0)
    torch.testing.assert_close(x0.std(0, keepdim=True), s, rtol=0.05, atol=0.01)


def test_ode_samplers_converge_to_exact_solution_dpmpp_fastest():
    den, _, _, z = _gaussian_problem(n=256)
    sigmas = sigma_schedules.get_sigmas_polyexponential(10, 0.01, 80.0)
    x = z * sigmas[0]
    exact = den.ode_solution(x, 80.0, 0.0)
    err = {
        name: (getattr(samplers, name)(den, x, sigmas, disable=True) - exact).abs().max().item()
        for name in ("sample_euler", "sample_heun", "sample_dpmpp_2m")
    }
    assert err["sample_dpmpp_2m"] < err["sample_euler"] / 5
    assert err["sample_heun"] < err["sample_euler"]
    fine = samplers.sample_dpmpp_2m(den, x, sigma_schedules.get_sigmas_polyexponential(80, 0.01, 80.0), disable=True)
    assert (fine - exact).abs().max().item() < err["sample_dpmpp_2m"]


def test_sde_samplers_reproducible_with_seed():
    den, _, _, z = _gaussian_problem(n=4)
    sigmas = sigma_schedules.get_sigmas_polyexponential(8, 0.05, 80.0)
    x = z * sigmas[0]
    runs = [
        samplers.sample_dpmpp_3m_sde(den, x, sigmas, disable=True, noise_sampler=BrownianTreeNoiseSampler(x, 0.05, 80.0, seed=s))
        for s in (11, 11, 12)
    ]
    torch.testing.assert_close(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])
    # default noise sampler (random seed) runs and gives finite output
    assert torch.isfinite(samplers.sample_dpmpp_2m_sde(den, x, sigmas, disable=True)).all()
