"""Numerical parity with stable-audio-tools on a reduced-size Stable Audio Open with random weights.

Same weights (converted by :mod:`musicdiff.reference.sat_weights`), same inputs: the Oobleck VAE,
the T5 + timing conditioners, the DiT (plain, classifier-free guided, and one training step's
gradients) and a whole generation (DPM-Solver++(2M), CFG 7, decode) must agree to ``rtol=1e-4``.
"""

from __future__ import annotations

import pytest
import torch

from tests.reference.conftest import WINDOW_LATENTS

RTOL, ATOL_REL = 1e-4, 1e-5  # atol is relative to the tensor's scale (values cross zero)

METADATA = [
    {"prompt": "a calm piano melody with soft strings", "seconds_start": 3.0, "seconds_total": 20.0},
    {"prompt": "energetic drums and deep bass, 128 bpm", "seconds_start": 0.0, "seconds_total": 900.0},
]


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    ours, ref = ours.float(), ref.float()
    assert ours.shape == ref.shape, what
    scale = ref.abs().max().clamp_min(1e-12)
    torch.testing.assert_close(ours, ref, rtol=RTOL, atol=ATOL_REL * float(scale), msg=lambda m: f"{what}: {m}")


def test_autoencoder_encode_decode(small_pair):
    sat_model, ours, _, _ = small_pair
    ae, ref = ours["autoencoder"], sat_model.pretransform
    audio = 0.5 * torch.randn(2, 2, 8 * 2048, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pre = ref.model.encode(audio, skip_bottleneck=True)
        assert_close(ae.encode(audio, sample=False), pre.chunk(2, dim=1)[0], "posterior mean")
        torch.manual_seed(3)
        z_ref = ref.encode(audio)  # SAT samples the posterior (mean + std·eps)
        torch.manual_seed(3)
        z = ae.encode(audio, sample=True)
        assert_close(z, z_ref, "sampled latents")
        assert_close(ae.decode(z_ref), ref.decode(z_ref), "decoded audio")


def test_conditioners(small_pair):
    sat_model, ours, _, _ = small_pair
    with torch.no_grad():
        ref = sat_model.get_conditioning_inputs(sat_model.conditioner(METADATA, "cpu"))
        got = ours["conditioner"](METADATA, "cpu")
    for key in ("cross_attn_cond", "global_cond"):
        assert_close(got[key], ref[key], key)
    assert torch.equal(got["cross_attn_mask"], ref["cross_attn_mask"].bool())
    assert got["cross_attn_cond"].shape[1] == 128 + 2  # T5 tokens + seconds_start + seconds_total


def test_dit_forward_and_guidance(small_pair):
    sat_model, ours, _, _ = small_pair
    dit = ours["dit"]
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 16, WINDOW_LATENTS, generator=gen), torch.tensor([0.15, 0.8])
    with torch.no_grad():
        ref_cond = sat_model.get_conditioning_inputs(sat_model.conditioner(METADATA, "cpu"))
        cond = ours["conditioner"](METADATA, "cpu")
        v_ref = sat_model.model(x, t, **ref_cond)
        v = dit(x, t, cond["cross_attn_cond"], cond["cross_attn_mask"], cond["global_cond"])
        assert_close(v, v_ref, "v prediction")
        # SAT guides v with zeroed cross-attention tokens as the unconditional branch.
        g_ref = sat_model.model(x, t, **ref_cond, cfg_scale=7.0)
        both = dit(torch.cat([x, x]), torch.cat([t, t]),
                   torch.cat([cond["cross_attn_cond"], torch.zeros_like(cond["cross_attn_cond"])]), None,
                   torch.cat([cond["global_cond"]] * 2))
        v_c, v_u = both.chunk(2)
        assert_close(v_u + 7.0 * (v_c - v_u), g_ref, "guided v")


def test_dit_training_step_gradients(small_pair):
    """Loss and parameter gradients of one v-objective step (SAT checkpoints every block)."""
    sat_model, ours, _, _ = small_pair
    dit, ref = ours["dit"], sat_model.model.model
    gen = torch.Generator().manual_seed(2)
    x, t = torch.randn(2, 16, WINDOW_LATENTS, generator=gen), torch.rand(2, generator=gen)
    target = torch.randn(x.shape, generator=gen)
    with torch.no_grad():
        cond = ours["conditioner"](METADATA, "cpu")
    losses = {}
    for name, model, kwargs in (
        ("ref", ref, dict(cross_attn_cond=cond["cross_attn_cond"], global_embed=cond["global_cond"])),
        ("ours", dit, dict(cross_attn_cond=cond["cross_attn_cond"], global_cond=cond["global_cond"])),
    ):
        model.train().zero_grad()
        loss = (model(x, t, **kwargs) - target).square().mean()
        loss.backward()
        losses[name] = loss.detach()
        model.eval()
    assert_close(losses["ours"], losses["ref"], "loss")
    ref_grads = dict(ref.named_parameters())
    for key, p in dit.named_parameters():
        assert_close(p.grad, ref_grads[key].grad, f"grad {key}")
    dit.zero_grad(), ref.zero_grad()


def test_full_generation_matches(small_pair):
    """Prompt → DPM-Solver++(2M) with CFG 7 from the same noise → decoded audio, on both sides."""
    from musicdiff.sampling import SamplerSpec
    from musicdiff.sampling.dpmpp import sample_dpmpp_2m
    from musicdiff.sampling.pipeline import Generator

    sat_model, ours, _, _ = small_pair
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    steps, seed, seconds = 6, 1234, WINDOW_LATENTS * 2048 / 44100
    prompt = "lofi hip hop beat for studying"
    with torch.no_grad():
        ref = generate_diffusion_cond(
            sat_model, steps=steps, cfg_scale=7.0, seed=seed, device="cpu", sample_size=WINDOW_LATENTS * 2048,
            conditioning=[{"prompt": prompt, "seconds_start": 0, "seconds_total": seconds}],
            sampler_type="dpmpp-2m", sigma_min=0.3, sigma_max=500.0, rho=1.0, return_latents=True)
    spec = SamplerSpec(sample_dpmpp_2m, steps=steps, sigma_min=0.3, sigma_max=500.0, rho=1.0, cfg_scale=7.0)
    gen = Generator(ours["autoencoder"], ours["dit"], ours["conditioner"], spec, window_latents=WINDOW_LATENTS,
                    decode_chunk_latents=None)
    latents = gen.generate(prompt, durations=seconds, seeds=seed, return_latents=True)[0]
    assert_close(latents, ref[0], "sampled latents")
    audio = gen.generate(prompt, durations=seconds, seeds=seed)[0]
    with torch.no_grad():
        ref_audio = sat_model.pretransform.decode(ref)[0]
    assert_close(audio, ref_audio, "generated audio")


@pytest.mark.parametrize("negative", ["rock guitar riff"])
def test_negative_prompt_generation(small_pair, negative):
    """Negative prompts replace the zeroed unconditional tokens (padding zeroed) on both sides."""
    from musicdiff.sampling import SamplerSpec
    from musicdiff.sampling.dpmpp import sample_dpmpp_2m
    from musicdiff.sampling.pipeline import Generator
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    sat_model, ours, _, _ = small_pair
    seconds, prompt = 0.5, "ambient synth pad, slow and dreamy"
    with torch.no_grad():
        ref = generate_diffusion_cond(
            sat_model, steps=3, cfg_scale=5.0, seed=7, device="cpu", sample_size=WINDOW_LATENTS * 2048,
            conditioning=[{"prompt": prompt, "seconds_start": 0, "seconds_total": seconds}],
            negative_conditioning=[{"prompt": negative, "seconds_start": 0, "seconds_total": seconds}],
            sampler_type="dpmpp-2m", sigma_min=0.3, sigma_max=500.0, rho=1.0, return_latents=True)
    spec = SamplerSpec(sample_dpmpp_2m, steps=3, sigma_min=0.3, sigma_max=500.0, rho=1.0, cfg_scale=5.0)
    gen = Generator(ours["autoencoder"], ours["dit"], ours["conditioner"], spec, window_latents=WINDOW_LATENTS,
                    decode_chunk_latents=None)
    latents = gen.generate(prompt, durations=seconds, seeds=7, negative_prompts=negative, return_latents=True)[0]
    assert_close(latents, ref[0], "latents with a negative prompt")


def test_nearest_upsample_decoder(sat):
    """SAT's ``use_nearest_upsample`` Oobleck decoder imports and decodes identically."""
    from hydra.utils import instantiate

    from musicdiff.reference.sat_config import autoencoder_config
    from musicdiff.reference.sat_weights import sat_to_musicdiff as convert
    from stable_audio_tools.models.autoencoders import OobleckDecoder
    from tests.helpers.stable_audio_tools import randomize_

    dec_cfg = {"out_channels": 2, "channels": 4, "latent_dim": 8, "c_mults": [1, 2], "strides": [2, 4],
               "use_snake": True, "final_tanh": False, "use_nearest_upsample": True}
    ref = OobleckDecoder(**dec_cfg).eval()
    randomize_(ref, seed=4)
    pretransform = {"type": "autoencoder", "config": {
        "encoder": {"type": "oobleck", "config": {"in_channels": 2, "channels": 4, "latent_dim": 16,
                                                  "c_mults": [1, 2], "strides": [2, 4], "use_snake": True}},
        "decoder": {"type": "oobleck", "config": dec_cfg}, "bottleneck": {"type": "vae"},
        "latent_dim": 8, "downsampling_ratio": 8, "io_channels": 2}}
    ours = instantiate(autoencoder_config(pretransform, 16000)["decoder"]).eval()
    tensors = convert({f"pretransform.model.decoder.{k}": v for k, v in ref.state_dict().items()})["autoencoder"]
    ours.load_state_dict({k[len("decoder."):]: v for k, v in tensors.items()}, strict=True)
    z = torch.randn(2, 8, 6, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert_close(ours(z), ref(z), "nearest-upsample decoder")
