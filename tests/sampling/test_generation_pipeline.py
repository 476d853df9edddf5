"""Generator: shapes, trimming, determinism, negative prompts, audio-to-audio, inpainting (stub models;
long form: test_long_form.py; trained models: test_trained_generation.py)."""

from __future__ import annotations

import math

import pytest
import torch

from musicdiff.sampling import Generator, InpaintRequest, SamplerSpec, samplers
from musicdiff.sampling.inpaint import latent_keep_mask
from tests.sampling.stubs import ShuffleAutoencoder, StubConditioner, StubDiT, StubVDenoiser


def _spec(fn=samplers.sample_dpmpp_2m, steps=6, sigma_min=0.02, sigma_max=30.0, cfg=3.0):
    return SamplerSpec(fn, steps=steps, sigma_min=sigma_min, sigma_max=sigma_max, cfg_scale=cfg)


def _generator(spec=None, window=64, wrapper=StubVDenoiser, **kw):
    ae = ShuffleAutoencoder(sample_rate=1000, io_channels=2, ratio=4)
    dit = StubDiT(ae.latent_dim)
    return Generator(ae, dit, StubConditioner(), spec or _spec(), window_latents=window,
                     decode_chunk_latents=None, denoiser_wrapper=wrapper, **kw)


def test_shapes_trimming_and_determinism():
    gen = _generator()
    assert gen.max_duration == pytest.approx(0.256)
    out = gen.generate(["warm piano", "fast drums"], durations=[0.1, 0.2], seeds=[1, 2])
    assert [tuple(a.shape) for a in out] == [(2, 100), (2, 200)]
    assert all(torch.isfinite(a).all() for a in out)
    again = gen.generate(["warm piano", "fast drums"], durations=[0.1, 0.2], seeds=[1, 2])
    for a, b in zip(out, again):
        torch.testing.assert_close(a, b)
    other = gen.generate(["warm piano"], durations=0.1, seeds=3)
    assert not torch.allclose(other[0], out[0])
    alone = gen.generate(["fast drums"], durations=0.2, seeds=2)  # an item depends only on its seed
    torch.testing.assert_close(alone[0], out[1], rtol=1e-4, atol=1e-5)
    full = gen.generate("ambient", seeds=None)
    assert full[0].shape == (2, 256) and len(gen.last_seeds) == 1


def test_sde_sampler_deterministic_per_seed():
    gen = _generator(_spec(samplers.sample_dpmpp_3m_sde))
    a = gen.generate(["a b", "c d"], durations=0.1, seeds=[5, 6])
    b = gen.generate(["a b", "c d"], durations=0.1, seeds=[5, 6])
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_default_vdenoiser_and_cfg_batched_forward():
    import musicdiff.diffusion  # noqa: F401 - the default v-denoiser; a broken import must fail, not skip
    gen = _generator(wrapper=None)
    gen.generate(["x y"], durations=0.1, seeds=0)
    assert set(gen.dit.calls) == {2}  # cond + uncond in one forward per step
    stub = _generator(wrapper=StubVDenoiser)
    torch.testing.assert_close(stub.generate(["x y"], durations=0.1, seeds=0)[0],
                               gen.generate(["x y"], durations=0.1, seeds=0)[0])
    no_cfg = _generator(_spec(cfg=1.0))
    no_cfg.generate(["x y"], durations=0.1, seeds=0)
    assert set(no_cfg.dit.calls) == {1}


def test_negative_prompt_changes_output():
    gen = _generator()
    base = gen.generate(["bright strings"], durations=0.1, seeds=0)[0]
    neg = gen.generate(["bright strings"], durations=0.1, seeds=0, negative_prompts="dull noise hiss")[0]
    assert not torch.allclose(base, neg)
    mixed = gen.generate(["bright strings", "bright strings"], durations=0.1, seeds=[0, 0],
                         negative_prompts=[None, "dull noise hiss"])
    torch.testing.assert_close(mixed[0], base, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mixed[1], neg, rtol=1e-4, atol=1e-5)


def test_negative_prompt_with_other_token_count():
    gen = _generator()
    gen.conditioner = StubConditioner(tokens=None)  # pads to the batch's longest prompt
    out = gen.generate(["soft piano", "organ"], durations=0.1, seeds=[0, 1],
                       negative_prompts=["loud distorted noisy harsh guitar", None])
    assert all(torch.isfinite(a).all() for a in out)


def test_duration_errors():
    gen = _generator()
    with pytest.raises(ValueError, match="maximum duration is 0.256"):
        gen.generate(["x"], durations=1.0)
    with pytest.raises(ValueError, match="durations"):
        gen.generate(["x", "y"], durations=[0.1])
    with pytest.raises(ValueError, match="init_noise_level"):
        gen.generate(["x"], init_audio=torch.zeros(2, 256))
    with pytest.raises(ValueError, match="channels"):
        gen.generate(["x"], init_audio=torch.zeros(1, 256), init_noise_level=1.0)


def _tone(seconds=0.256, sr=1000, channels=2):
    t = torch.arange(int(seconds * sr)) / sr
    return torch.stack([torch.sin(2 * math.pi * 7 * t) * (0.5 + 0.1 * c) for c in range(channels)])


def test_audio_to_audio_low_noise_stays_close():
    gen = _generator(_spec(sigma_min=0.002, sigma_max=30.0, steps=8, cfg=1.0))
    init = _tone()

    def rel_err(level):
        out = gen.generate(["a"], seeds=0, init_audio=init, init_noise_level=level)[0]
        return ((out - init).pow(2).mean().sqrt() / init.pow(2).mean().sqrt()).item()

    errs = [rel_err(level) for level in (0.01, 0.1, 20.0)]
    assert errs[0] < 0.1 and errs[0] < errs[1] < errs[2] and errs[2] > 1.0
    with pytest.raises(ValueError, match="sigma_min"):
        gen.generate(["a"], init_audio=init, init_noise_level=0.001)


@pytest.mark.parametrize("fn", [samplers.sample_dpmpp_2m, samplers.sample_dpmpp_3m_sde, samplers.sample_euler])
def test_inpainting_keeps_known_region_and_fills_the_rest(fn):
    gen = _generator(_spec(fn, steps=10))
    known = _tone()
    request = InpaintRequest.span(known, 0.1, 0.2, sample_rate=1000)  # regenerate 0.1-0.2 s
    out = gen.generate(["a b"], seeds=1, inpaint=request)[0]
    keep = request.keep
    torch.testing.assert_close(out[:, keep], known[:, keep], rtol=1e-4, atol=1e-4)
    gap = out[:, ~keep]
    assert torch.isfinite(gap).all() and (gap - known[:, ~keep]).abs().mean() > 0.05


def test_continuation_mask():
    audio = torch.zeros(2, 100)
    req = InpaintRequest.continuation(audio, keep_seconds=0.05, sample_rate=1000)
    assert req.keep[:50].all() and not req.keep[50:].any()
    lat = latent_keep_mask(req.keep[None], ratio=4, latent_len=30)
    assert lat.shape == (1, 1, 30) and lat[0, 0, :12].all() and not lat[0, 0, 12:].any()
    with pytest.raises(ValueError, match="keep mask"):
        InpaintRequest(audio, torch.ones(10, dtype=torch.bool))
    gen = _generator()
    out = gen.generate(["a"], seeds=0, inpaint=InpaintRequest.continuation(_tone(0.1), 0.1, 1000))[0]
    torch.testing.assert_close(out[:, :100], _tone(0.1), rtol=1e-4, atol=1e-4)


def test_with_real_dit_and_vdenoiser():
    import musicdiff.diffusion  # noqa: F401 - a broken import must fail, not skip
    from musicdiff.models import dit as dit_mod
    ae = ShuffleAutoencoder(sample_rate=1000, io_channels=2, ratio=4)
    dit = dit_mod.DiffusionTransformer(io_channels=8, width=32, depth=1, num_heads=2,
                                       cond_token_dim=8, global_cond_dim=2)
    gen = Generator(ae, dit, StubConditioner(), _spec(samplers.sample_dpmpp_3m_sde, steps=4),
                    window_latents=32, decode_chunk_latents=16, decode_overlap_latents=4)
    a = gen.generate(["a b", "c"], durations=[0.05, 0.1], seeds=[0, 1], negative_prompts="noise")
    b = gen.generate(["a b", "c"], durations=[0.05, 0.1], seeds=[0, 1], negative_prompts="noise")
    assert [tuple(x.shape) for x in a] == [(2, 50), (2, 100)]
    torch.testing.assert_close(a[0], b[0])
    assert ae.chunked_calls == 4


def _dit_generator(**kw):
    from musicdiff.models.dit import DiffusionTransformer

    ae = ShuffleAutoencoder(sample_rate=1000, io_channels=2, ratio=4)
    torch.manual_seed(0)
    dit = DiffusionTransformer(io_channels=ae.latent_dim, width=64, depth=2, num_heads=4,
                               cond_token_dim=StubConditioner.cond_dim,
                               global_cond_dim=StubConditioner.global_cond_dim).eval()
    return Generator(ae, dit, StubConditioner(), _spec(steps=4), window_latents=16, decode_chunk_latents=None, **kw)


def test_precision_and_packed_gemm():
    ref = _dit_generator(packed_gemm=False).generate(["soft piano", "drums"], seeds=[0, 1])
    packed = _dit_generator().generate(["soft piano", "drums"], seeds=[0, 1])
    for a, b in zip(packed, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for precision in ("bf16", "fp16"):
        low = _dit_generator(precision=precision).generate(["soft piano", "drums"], seeds=[0, 1])
        for a, b in zip(low, ref):
            assert a.dtype == torch.float32 and torch.isfinite(a).all()
            rel = float((a - b).abs().max() / b.abs().max())
            assert 0 < rel < 0.1, (precision, rel)  # autocast really ran, at its precision's error
    with pytest.raises(ValueError, match="precision must be one of"):
        _dit_generator(precision="fp8")
