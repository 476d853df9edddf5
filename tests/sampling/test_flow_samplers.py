"""Flow samplers and schedules: parity with stable-audio-tools 0.0.19, exactness on Gaussian data,
every (objective, sampler space) pair, the flow_* sampler configs and flow generation options."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.diffusion import FlowDenoiser, TimeShift, make_denoiser
from musicdiff.sampling import CFGDenoiser, Generator, InpaintRequest, SamplerSpec, samplers
from musicdiff.sampling.flow_schedules import get_flow_ts_linear, get_flow_ts_logsnr
from tests.sampling.stubs import ShuffleAutoencoder, StubConditioner, StubDiT

CONF = Path(__file__).resolve().parents[2] / "conf" / "sampler"
FLOW_OPTIONS = ["flow_euler", "flow_pingpong", "flow_dpmpp"]


# ----------------------------------------------------------------- SAT parity
@pytest.fixture(scope="module")
def sat_dit():
    from tests.helpers.stable_audio_tools import load_sat, randomize_

    load_sat()
    from stable_audio_tools.models.dit import DiffusionTransformer

    torch.manual_seed(0)
    model = DiffusionTransformer(io_channels=4, embed_dim=64, depth=1, num_heads=1, cond_token_dim=8,
                                 global_cond_dim=6, diffusion_objective="rectified_flow").eval()
    randomize_(model, seed=5)
    return model


def _inputs():
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(2, 4, 20, generator=gen)
    cond = {"cross_attn_cond": torch.randn(2, 5, 8, generator=gen), "global_cond": torch.randn(2, 6, generator=gen)}
    return noise, cond


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
@pytest.mark.parametrize(("ours", "theirs"), [("sample_flow_euler", "sample_discrete_euler"),
                                              ("sample_flow_pingpong", "sample_flow_pingpong"),
                                              ("sample_flow_dpmpp", "sample_flow_dpmpp")])
def test_flow_sampler_matches_sat(sat_dit, ours, theirs, cfg_scale):
    from stable_audio_tools.inference import sampling as sat_sampling

    noise, cond = _inputs()
    ts = get_flow_ts_logsnr(6)
    with torch.no_grad():
        torch.manual_seed(9)  # ping-pong's fresh noise comes from the global RNG on both sides
        ref = getattr(sat_sampling, theirs)(sat_dit, noise, sigmas=ts, cross_attn_cond=cond["cross_attn_cond"],
                                            global_embed=cond["global_cond"], cfg_scale=cfg_scale)
    net = lambda x, t, cross_attn_cond, global_cond: sat_dit(  # noqa: E731
        x, t, cross_attn_cond=cross_attn_cond, global_embed=global_cond)
    uncond = dict(cond, cross_attn_cond=torch.zeros_like(cond["cross_attn_cond"]))  # SAT's null condition
    den = CFGDenoiser(FlowDenoiser(net), scale=cfg_scale)
    torch.manual_seed(9)
    out = getattr(samplers, ours)(den, noise, ts, extra_args={"cond": cond, "uncond": uncond}, disable=True)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def _record_ts(fn, **kwargs):
    seen = []

    def model(x, t, **extra):
        seen.append((x.clone(), float(t[0])))
        return torch.zeros_like(x)

    fn(model, **kwargs)
    return seen


@pytest.mark.parametrize("t_max", [1.0, 0.6])
def test_logsnr_schedule_and_audio_to_audio_start_match_sat_sample_rf(sat_dit, t_max):
    from stable_audio_tools.inference.sampling import sample_rf

    noise, init = torch.randn(1, 4, 8), torch.randn(1, 4, 8)
    seen = _record_ts(sample_rf, noise=noise, init_data=init if t_max < 1 else None, steps=8,
                      sampler_type="euler", sigma_max=t_max, device="cpu")
    ts = get_flow_ts_logsnr(8, sigma_max=t_max)
    torch.testing.assert_close(ts[:-1], torch.tensor([t for _, t in seen]), rtol=1e-6, atol=0)
    assert ts[-1] == 0
    start = noise * ts[0] + (init * (1 - ts[0]) if t_max < 1 else 0)  # the Generator's flow start
    torch.testing.assert_close(start, seen[0][0])


def test_shifted_linear_schedule_matches_sat(sat_dit):
    from stable_audio_tools.inference.sampling import DistributionShift, sample_discrete_euler

    opts = {"base_shift": 0.5, "max_shift": 1.15, "min_length": 16, "max_length": 128}
    seen = _record_ts(sample_discrete_euler, x=torch.randn(1, 4, 40), steps=5, dist_shift=DistributionShift(**opts),
                      disable_tqdm=True)
    ts = get_flow_ts_linear(5, shift=TimeShift(**opts), length=40)
    torch.testing.assert_close(ts[:-1], torch.tensor([t for _, t in seen]), rtol=1e-6, atol=0)
    spec = SamplerSpec(samplers.sample_flow_euler, steps=5, sigma_min=None, sigma_max=1.0, rho=None, space="flow",
                       schedule=lambda n, sigma_max, length, device: get_flow_ts_linear(
                           n, sigma_max, TimeShift(**opts), length, device))
    torch.testing.assert_close(spec.sigmas(length=40), ts)


# ------------------------------------------------ exactness on Gaussian data
MU, S = 0.7, 0.5


def _rf_net(x, t, **cond):
    """Exact velocity for x0 ~ N(MU, S²): v = (x_t − E[x0 | x_t]) / t."""
    tb = t.reshape(-1, 1, 1)
    x0 = MU + (1 - tb) * S**2 / ((1 - tb) ** 2 * S**2 + tb**2) * (x - (1 - tb) * MU)
    return (x - x0) / tb


def _v_net(x, tau, **cond):
    """Exact v for x0 ~ N(MU, S²) at VP time tau."""
    a, s = (f(tau * math.pi / 2).reshape(-1, 1, 1) for f in (torch.cos, torch.sin))
    x0 = MU + a * S**2 / (a**2 * S**2 + s**2) * (x - a * MU)
    eps = (x - a * x0) / s
    return a * eps - s * x0


@pytest.mark.parametrize("objective", ["v", "rectified_flow"])
@pytest.mark.parametrize(("fn", "space", "steps"), [(samplers.sample_flow_euler, "flow", 400),
                                                    (samplers.sample_flow_dpmpp, "flow", 40),
                                                    (samplers.sample_dpmpp_2m, "ve", 60)])
def test_every_objective_and_space_solves_the_gaussian_ode(objective, fn, space, steps):
    """The probability-flow map of N(MU, S²) data sends noise eps to MU + S·eps, whatever the parametrisation."""
    eps = torch.randn(4, 2, 16, generator=torch.Generator().manual_seed(0))
    den = make_denoiser(_v_net if objective == "v" else _rf_net, objective, space)
    if space == "flow":
        out = fn(den, eps, get_flow_ts_logsnr(steps, logsnr_min=-8.0, logsnr_max=6.0), disable=True)
    else:
        sigmas = SamplerSpec(fn, steps=steps, sigma_min=0.01, sigma_max=2000.0).sigmas()
        out = fn(den, eps * sigmas[0], sigmas, disable=True)
    torch.testing.assert_close(out, MU + S * eps, rtol=0, atol=2e-2)


# ------------------------------------------------------- configs + Generator
@pytest.mark.parametrize("option", FLOW_OPTIONS)
def test_flow_sampler_configs_instantiate_and_run(option):
    spec = instantiate(OmegaConf.load(CONF / f"{option}.yaml"))
    assert isinstance(spec, SamplerSpec) and spec.space == "flow"
    ts = spec.sigmas()
    assert ts.shape == (spec.steps + 1,) and ts[0] == 1 and ts[-1] == 0 and (ts.diff() < 0).all()
    den = make_denoiser(_rf_net, "rectified_flow", "flow")
    out = spec.run(spec.guided(den), torch.randn(2, 2, 8), seed=[0, 1], disable=True)
    assert torch.isfinite(out).all() and abs(float(out.mean()) - MU) < 0.3
    with pytest.raises(ValueError, match="<= 1"):
        spec.sigmas(sigma_max=2.0)


def _flow_generator(option="flow_dpmpp", objective="rectified_flow", **overrides):
    ae = ShuffleAutoencoder(sample_rate=1000, io_channels=2, ratio=4)
    spec = instantiate(OmegaConf.merge(OmegaConf.load(CONF / f"{option}.yaml"), overrides))
    return Generator(ae, StubDiT(ae.latent_dim), StubConditioner(), spec, window_latents=32,
                     decode_chunk_latents=None, objective=objective)


def test_generator_picks_the_denoiser_for_objective_and_sampler():
    from musicdiff.diffusion import FlowSigmaDenoiser, VDenoiser, VFlowDenoiser

    assert isinstance(_flow_generator().denoiser, FlowDenoiser)
    assert isinstance(_flow_generator(objective="v").denoiser, VFlowDenoiser)
    gen = _flow_generator()
    gen.sampler = instantiate(OmegaConf.load(CONF / "dpmpp_2m.yaml"))  # swap in a k-diffusion sampler
    out = gen.generate("a b", durations=0.1, seeds=0, steps=4)
    assert isinstance(gen.denoiser, FlowSigmaDenoiser) and torch.isfinite(out[0]).all()
    v_gen = _flow_generator(objective="v")
    v_gen.sampler = gen.sampler
    v_gen.generate("a b", durations=0.1, seeds=0, steps=4)
    assert isinstance(v_gen.denoiser, VDenoiser)
    with pytest.raises(ValueError, match="unknown diffusion objective"):
        _flow_generator(objective="eps")


@pytest.mark.parametrize("option", FLOW_OPTIONS)
def test_flow_generation_is_seeded_and_supports_audio_to_audio_and_inpainting(option):
    gen = _flow_generator(option, steps=6, cfg_scale=3.0)
    a = gen.generate(["x y", "z"], durations=0.1, seeds=[1, 2])
    b = gen.generate(["x y", "z"], durations=0.1, seeds=[1, 2])
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    init = torch.randn(2, 128, generator=torch.Generator().manual_seed(4))
    near = gen.generate("x y", seeds=0, init_audio=init, init_noise_level=0.2)[0]
    far = gen.generate("x y", seeds=0, init_audio=init, init_noise_level=1.0)[0]
    # ODE samplers move a lightly noised input little; ping-pong trusts the (random stub) model's x0 more
    ratio = 1.0 if option == "flow_pingpong" else 0.3
    assert (near - init).abs().mean() < ratio * (far - init).abs().mean()
    for level, message in ((2.0, "<= 1"), (0.05, "must be above")):
        with pytest.raises(ValueError, match=message):
            gen.generate("x y", seeds=0, init_audio=init, init_noise_level=level)
    keep = torch.zeros(128, dtype=torch.bool)
    keep[:64] = True
    out = gen.generate("x y", seeds=0, inpaint=InpaintRequest(init, keep))[0]
    torch.testing.assert_close(out[:, :64], init[:, :64])
    assert not torch.allclose(out[:, 64:], init[:, 64:], atol=0.1)


def test_inpaint_denoiser_renoises_known_latents_in_flow_time():
    from musicdiff.sampling import InpaintDenoiser

    seen = {}

    def inner(x, t, **kw):
        seen["x"] = x.clone()
        return torch.zeros_like(x)

    known, noise, x = torch.randn(3, 2, 2, 6).unbind(0)
    keep = torch.tensor([True, True, False, False, False, True]).reshape(1, 1, 6)
    t = torch.tensor([0.3, 0.8])
    out = InpaintDenoiser(inner, known, keep, noise, flow=True)(x, t)
    tb = t.reshape(-1, 1, 1)
    torch.testing.assert_close(seen["x"], torch.where(keep, (1 - tb) * known + tb * noise, x))
    torch.testing.assert_close(out, torch.where(keep, known, torch.zeros_like(x)))
