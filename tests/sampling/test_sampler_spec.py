"""SamplerSpec and the conf/sampler/*.yaml options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.sampling import SamplerSpec, samplers, sigma_schedules
from musicdiff.sampling.guidance import CFGDenoiser
from tests.sampling.stubs import GaussianDenoiser

CONF = Path(__file__).resolve().parents[2] / "conf" / "sampler"
OPTIONS = ["dpmpp_3m_sde", "dpmpp_2m", "dpmpp_2m_sde", "euler", "heun", "ddim"]


@pytest.mark.parametrize("option", OPTIONS)
def test_every_sampler_config_instantiates_and_samples(option):
    cfg = OmegaConf.load(CONF / f"{option}.yaml")
    spec = instantiate(cfg)
    assert isinstance(spec, SamplerSpec)
    sigmas = spec.sigmas("cpu")
    assert sigmas.shape == (cfg.steps + 1,) and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(cfg.sigma_max, rel=1e-5)
    assert isinstance(spec.guided(lambda x, s, **k: x), CFGDenoiser)
    den = GaussianDenoiser(torch.zeros(1, 2, 1), torch.ones(1, 2, 1))
    x = torch.randn(2, 2, 3) * 10.0
    out = spec.run(den, x, sigmas=spec.sigmas("cpu", steps=4, sigma_max=10.0), seed=[0, 1], disable=True)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_sao_defaults():
    spec = instantiate(OmegaConf.load(CONF / "dpmpp_3m_sde.yaml"))
    assert (spec.steps, spec.sigma_min, spec.sigma_max, spec.rho, spec.cfg_scale) == (100, 0.3, 500.0, 1.0, 7.0)
    torch.testing.assert_close(spec.sigmas(), sigma_schedules.get_sigmas_polyexponential(100, 0.3, 500.0, 1.0))


def test_run_equals_direct_call_and_seed_reproducible():
    spec = SamplerSpec(samplers.sample_dpmpp_3m_sde, steps=6, sigma_min=0.05, sigma_max=20.0)
    den = GaussianDenoiser(torch.zeros(1, 1, 1), torch.ones(1, 1, 1))
    x = torch.randn(3, 1, 8) * 20.0
    a, b = spec.run(den, x, seed=[1, 2, 3], disable=True), spec.run(den, x, seed=[1, 2, 3], disable=True)
    torch.testing.assert_close(a, b)
    c = spec.run(den, x, seed=[1, 2, 4], disable=True)
    torch.testing.assert_close(a[:2], c[:2])  # per-item seeds: other items unchanged
    assert not torch.allclose(a[2], c[2])
    det = SamplerSpec(samplers.sample_dpmpp_2m, steps=6, sigma_min=0.05, sigma_max=20.0)
    direct = samplers.sample_dpmpp_2m(den, x, det.sigmas(), disable=True)
    torch.testing.assert_close(det.run(den, x, disable=True), direct)


def test_bad_specs():
    with pytest.raises(ValueError, match="rho"):
        SamplerSpec(samplers.sample_euler, schedule=sigma_schedules.get_sigmas_exponential, rho=2.0)
    with pytest.raises(ValueError, match="callable"):
        SamplerSpec("musicdiff.sampling.samplers.sample_euler")
    with pytest.raises(ValueError, match="steps"):
        SamplerSpec(samplers.sample_euler, steps=0)
    with pytest.raises(ValueError, match="sigma_min"):
        SamplerSpec(samplers.sample_euler, sigma_min=5.0, sigma_max=1.0)
    spec = SamplerSpec(samplers.sample_euler)
    with pytest.raises(ValueError, match="must be > sigma_min"):
        spec.sigmas(sigma_max=0.1)
