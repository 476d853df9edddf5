"""Stable Audio Open Small style checkpoints (rectified flow / ``rf_denoiser``) against stable-audio-tools 0.0.19.

A reduced-size SAO Small with the option set of the released ``model_config.json``
(``seconds_total`` only, prompt tokens projected to the model width, per-head LayerNorm on queries
and keys: ``attn_kwargs.qk_norm: "ln"``; ``rf_denoiser`` objective, here with a length-dependent
time shift) is built by SAT's own factory with random weights and written in the release layout. Then:
``load_pretrained(<model.safetensors>)`` gives the same DiT output and records the objective;
``musicdiff-train init_from=<file>`` takes one training step equal to SAT's own
``DiffusionCondTrainingWrapper.training_step`` (loss and every DiT gradient, with SAT's time
shift); ``musicdiff-generate checkpoint=<file> sampler=flow_pingpong`` (8 steps, no CFG) gives
SAT's ``generate_diffusion_cond`` latents; and the export round trip is bit-exact.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.reference.conftest import WINDOW_LATENTS, small_sao_config
from tests.reference.sat_training import assert_training_step_matches_sat
from tests.reference.test_sat_parity import assert_close

SHIFT = {"base_shift": 0.5, "max_shift": 1.15, "min_length": 4, "max_length": 64}
# model.diffusion.config keys of the released SAO Small (everything else at SAT's defaults)
RELEASED_DIT_KEYS = {"io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim", "global_cond_dim",
                     "transformer_type", "attn_kwargs"}
METADATA = [{"prompt": "warm arpeggios on house beats", "seconds_total": 11.0},
            {"prompt": "lofi drums", "seconds_total": 4.0}]


def small_sao_small_config() -> dict:
    """SAO Small's layout at test size (the VAE and T5 projection of ``small_sao_config``)."""
    from musicdiff.reference.sat_presets import stable_audio_open_small_config

    base = small_sao_config()["model"]["diffusion"]["config"]
    return stable_audio_open_small_config(ae_channels=4, latent_dim=16, embed_dim=base["embed_dim"],
                                          depth=base["depth"], num_heads=base["num_heads"], cond_dim=64,
                                          sample_size=WINDOW_LATENTS * 2048, distribution_shift_options=SHIFT,
                                          timestep_sampler="logit_normal")


@pytest.fixture(scope="module")
def sao_small(sat, t5_768, tmp_path_factory):
    """``(sat_model, release_dir)``: SAT's reduced SAO Small with random weights, written like the release."""
    from musicdiff.reference.sat_reference import build_sat_model
    from tests.helpers.stable_audio_tools import randomize_

    config = small_sao_small_config()
    torch.manual_seed(0)
    model = build_sat_model(config, t5_path=t5_768).eval()
    randomize_(model, seed=4)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():  # QK-norm gains near 1 (randomize_ puts 1-D weights near 0): sharp attention
        for name, p in model.named_parameters():
            if ".q_norm." in name or ".k_norm." in name:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=gen))
    layer = model.model.model.transformer.layers[0]
    assert isinstance(layer.self_attn.q_norm, torch.nn.LayerNorm) and isinstance(layer.cross_attn.k_norm,
                                                                                   torch.nn.LayerNorm)
    assert layer.cross_attn.kv_heads == layer.cross_attn.num_heads  # projected prompt tokens, as released
    assert model.diffusion_objective == "rf_denoiser" and model.dist_shift is not None
    root = tmp_path_factory.mktemp("stable-audio-open-small")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / "model.safetensors"))
    (root / "model_config.json").write_text(json.dumps(config, indent=4))
    return model, root


def test_config_maps_objective_shift_and_density():
    from musicdiff.reference import musicdiff_to_sat, sat_to_musicdiff

    config = small_sao_small_config()
    assert set(config["model"]["diffusion"]["config"]) == RELEASED_DIT_KEYS
    assert config["model"]["diffusion"]["config"]["attn_kwargs"] == {"qk_norm": "ln"}
    groups = sat_to_musicdiff(config)
    assert groups["dit"]["qk_norm"] == "ln" and groups["dit"]["project_cond_tokens"] is True
    assert groups["diffusion"]["_target_"] == "musicdiff.diffusion.RectifiedFlowLoss"
    assert groups["diffusion"]["objective"] == "rf_denoiser"
    assert groups["diffusion"]["timestep_density"]["_target_"] == "musicdiff.diffusion.LogitNormalTimesteps"
    assert groups["diffusion"]["time_shift"] == {"_target_": "musicdiff.diffusion.TimeShift", **SHIFT}
    back = musicdiff_to_sat(groups)
    for key in ("diffusion_objective", "distribution_shift_options", "global_cond_ids", "cross_attention_cond_ids"):
        assert back["model"]["diffusion"][key] == config["model"]["diffusion"][key], key
    assert back["training"] == {"timestep_sampler": "logit_normal"}
    sat_defaults = {"project_cond_tokens": True, "project_global_cond": True, "rotary_pos_emb": True}
    assert back["model"]["diffusion"]["config"] == sat_defaults | config["model"]["diffusion"]["config"]
    # the v-objective of Stable Audio Open 1.0 writes nothing new (its files stay as they were)
    v_back = musicdiff_to_sat(sat_to_musicdiff(small_sao_config()))
    assert "diffusion_objective" not in v_back["model"]["diffusion"] and "training" not in v_back


def test_load_pretrained_dit_forward_matches_sat(sao_small, t5_768, monkeypatch):
    from hydra.utils import instantiate

    from musicdiff.diffusion import objective_of
    from musicdiff.pretrained import load_pretrained

    sat_model, root = sao_small
    monkeypatch.setenv("MUSICDIFF_T5_PATH", t5_768)
    pre = load_pretrained(root / "model.safetensors")
    assert pre.kind == "sat" and objective_of(pre.config.diffusion) == "rf_denoiser"
    gen = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 16, WINDOW_LATENTS, generator=gen), torch.tensor([0.2, 0.9])
    with torch.no_grad():
        ref_cond = sat_model.get_conditioning_inputs(sat_model.conditioner(METADATA, "cpu"))
        cond = pre.conditioner(METADATA, "cpu")
        v_ref = sat_model.model(x, t, **ref_cond)
        v = pre.dit(x, t, cond["cross_attn_cond"], cond["cross_attn_mask"], cond["global_cond"])
        # the QK-norm weights carry: the same DiT without them is far from SAT's output
        plain = instantiate(pre.config.dit, qk_norm="none").eval()
        plain.load_state_dict({k: w for k, w in pre.dit.state_dict().items()
                               if ".q_norm." not in k and ".k_norm." not in k}, strict=True)
        v_plain = plain(x, t, cond["cross_attn_cond"], cond["cross_attn_mask"], cond["global_cond"])
    assert_close(v, v_ref, "rf velocity")
    assert (v_plain - v_ref).abs().max() > 0.1 * v_ref.abs().max()


def test_rf_training_step_matches_sat_wrapper(sao_small, t5_768, compose_cfg, monkeypatch):
    """One rectified-flow step with SAT's time shift: loss and every DiT gradient."""
    from hydra.utils import instantiate

    from musicdiff.cli.train import pretrained_parts
    from musicdiff.reference.sat_reference import load_sat_training
    from musicdiff.reference.sat_config import sat_to_musicdiff

    sat = load_sat_training("training.diffusion")
    sat_model, root = sao_small
    monkeypatch.setenv("MUSICDIFF_T5_PATH", t5_768)
    diffusion = sat_to_musicdiff(json.loads((root / "model_config.json").read_text()))["diffusion"]
    overrides = [f"init_from={root / 'model.safetensors'}", "task.cfg_dropout_prob=0.0", "logger=none",
                 "diffusion=rectified_flow", "diffusion.objective=rf_denoiser",
                 "+diffusion.time_shift={_target_: musicdiff.diffusion.TimeShift, base_shift: 0.5, "
                 "max_shift: 1.15, min_length: 4, max_length: 64}"]
    cfg = compose_cfg("train", overrides)
    assert dict(cfg.diffusion.time_shift) == diffusion["time_shift"]
    task = instantiate(cfg.task, **pretrained_parts(cfg)).train()

    assert_training_step_matches_sat(task, sat, sat_model, METADATA, monkeypatch, timestep_sampler="uniform")


def test_generate_pingpong_without_cfg_matches_sat(sao_small, t5_768, compose_cfg, monkeypatch):
    """``musicdiff-generate checkpoint=<SAT file> sampler=flow_pingpong``: 8 steps, no CFG, SAT's latents."""
    from stable_audio_tools.inference import sampling as sat_sampling
    from stable_audio_tools.inference.generation import generate_diffusion_cond

    from musicdiff.pretrained.generator import build_generator

    sat_model, root = sao_small
    monkeypatch.setenv("MUSICDIFF_T5_PATH", t5_768)
    prompt, seed, renoise_seed = "warm arpeggios on house beats", 5, 77
    # ping-pong re-noises from the global RNG in SAT: seed it at the start of sampling on both sides
    original = sat_sampling.sample_flow_pingpong

    def seeded_pingpong(*args, **kwargs):
        torch.manual_seed(renoise_seed)
        return original(*args, **kwargs)

    def global_rng_noise(x, sigma_min, sigma_max, seed=None):  # noqa: ARG001 - the SamplerSpec factory signature
        torch.manual_seed(renoise_seed)
        return lambda t, t_next: torch.randn_like(x)

    cfg = compose_cfg("generate", [f"checkpoint={root / 'model.safetensors'}", "sampler=flow_pingpong",
                                   "logger=none", "generator.decode_chunk_latents=null"])
    assert cfg.sampler.steps == 8 and cfg.sampler.cfg_scale == 1.0
    gen = build_generator(cfg, torch.device("cpu"))
    gen.sampler.noise_sampler = global_rng_noise
    seconds = gen.max_duration
    latents = gen.generate(prompt, seeds=seed, return_latents=True)[0]
    monkeypatch.setattr(sat_sampling, "sample_flow_pingpong", seeded_pingpong)
    with torch.no_grad():
        ref = generate_diffusion_cond(
            sat_model, steps=8, cfg_scale=1.0, seed=seed, device="cpu", sample_size=WINDOW_LATENTS * 2048,
            conditioning=[{"prompt": prompt, "seconds_total": seconds}], sampler_type="pingpong",
            return_latents=True)
    assert_close(latents, ref[0], "rf_denoiser ping-pong latents")


def test_export_round_trip_is_bit_exact(sao_small, t5_768, tmp_path):
    from musicdiff.reference.export_sat import export_sat
    from musicdiff.reference.import_sat import import_sat
    from musicdiff.reference.sat_reference import build_sat_model

    sat_model, root = sao_small
    out = import_sat(root / "model.safetensors", tmp_path / "export", t5_path=t5_768)
    back = export_sat(out, tmp_path / "sat", t5_name="t5-base")
    state = load_file(str(back / "model.safetensors"))
    original = sat_model.state_dict()
    assert set(state) == set(original) and all(torch.equal(state[k], original[k]) for k in original)
    config = json.loads((back / "model_config.json").read_text())
    source = json.loads((root / "model_config.json").read_text())
    assert config["model"]["diffusion"]["diffusion_objective"] == "rf_denoiser"
    assert config["model"]["diffusion"]["distribution_shift_options"] == SHIFT
    assert config["training"] == source["training"]
    rebuilt = build_sat_model(config, t5_path=t5_768)
    rebuilt.load_state_dict(state, strict=True)
    assert rebuilt.diffusion_objective == "rf_denoiser" and rebuilt.dist_shift.min_length == 4
