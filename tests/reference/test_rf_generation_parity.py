"""A whole rectified-flow generation against stable-audio-tools 0.0.19 on random weights.

The reduced Stable Audio Open of ``conftest.small_pair`` with SAT's ``diffusion_objective`` set to
``rectified_flow`` (the DiT weights are objective-independent): prompt → flow Euler / flow
DPM-Solver++ with CFG 7 from the same seed (SAT's ``generate_diffusion_cond`` → ``sample_rf``) →
latents, which must agree to ``rtol=1e-4``.
"""

from __future__ import annotations

import copy

import pytest
import torch

from tests.reference.conftest import WINDOW_LATENTS
from tests.reference.test_sat_parity import assert_close


@pytest.fixture(scope="module")
def rf_pair(small_pair, t5_768):
    from musicdiff.reference.sat_reference import build_sat_model

    sat_model, ours, _, config = small_pair
    config = copy.deepcopy(config)
    config["model"]["diffusion"]["diffusion_objective"] = "rectified_flow"
    rf_model = build_sat_model(config, t5_path=t5_768).eval()
    rf_model.load_state_dict(sat_model.state_dict())
    assert rf_model.diffusion_objective == "rectified_flow"
    return rf_model, ours


@pytest.mark.parametrize(("sampler_type", "fn"), [("euler", "sample_flow_euler"), ("dpmpp", "sample_flow_dpmpp")])
def test_rf_generation_matches_sat(rf_pair, sampler_type, fn):
    from musicdiff.sampling import SamplerSpec, samplers
    from musicdiff.sampling.flow_schedules import get_flow_ts_logsnr
    from musicdiff.sampling.pipeline import Generator
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    rf_model, ours = rf_pair
    steps, seed, seconds, prompt = 6, 321, WINDOW_LATENTS * 2048 / 44100, "lofi hip hop beat for studying"
    with torch.no_grad():
        ref = generate_diffusion_cond(
            rf_model, steps=steps, cfg_scale=7.0, seed=seed, device="cpu", sample_size=WINDOW_LATENTS * 2048,
            conditioning=[{"prompt": prompt, "seconds_start": 0, "seconds_total": seconds}],
            sampler_type=sampler_type, return_latents=True)
    spec = SamplerSpec(getattr(samplers, fn), steps=steps, schedule=get_flow_ts_logsnr, sigma_min=None,
                       sigma_max=1.0, rho=None, cfg_scale=7.0, cfg_interval=(0.0, 1.0), space="flow")
    gen = Generator(ours["autoencoder"], ours["dit"], ours["conditioner"], spec, window_latents=WINDOW_LATENTS,
                    decode_chunk_latents=None, objective="rectified_flow")
    latents = gen.generate(prompt, durations=seconds, seeds=seed, return_latents=True)[0]
    assert_close(latents, ref[0], f"rectified-flow {sampler_type} latents")
