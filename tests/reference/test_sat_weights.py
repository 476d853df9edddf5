"""Checkpoint key mapping against stable-audio-tools: full size on the meta device, round trips."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.reference import musicdiff_to_sat, sat_to_musicdiff, stable_audio_open_config
from musicdiff.reference import sat_weights
from musicdiff.reference.sat_presets import stable_audio_open_small_config
from musicdiff.reference.sat_reference import build_sat_model

SAO_PARAMS = {"autoencoder": 156_112_514, "dit": 1_056_828_544, "conditioner": 396_544}
# Stable Audio Open Small: the same VAE, a 341M DiT (arXiv 2505.08175; QK-norm, projected prompt tokens),
# one timing embedder (seconds_total)
SAO_SMALL_PARAMS = {"autoencoder": 156_112_514, "dit": 340_879_488, "conditioner": 198_272}


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("preset, params", [(stable_audio_open_config, SAO_PARAMS),
                                            (stable_audio_open_small_config, SAO_SMALL_PARAMS)], ids=["sao", "small"])
def test_full_size_stable_audio_open_on_meta(sat, t5_768, preset, params):
    """Stable Audio Open 1.0 / Small at full size, built without allocating: same parameters, same tensors."""
    config = preset()
    with torch.device("meta"):
        ref = build_sat_model(config, t5_path=t5_768)
        groups = OmegaConf.create(sat_to_musicdiff(config, t5_path=t5_768))
        ours = {name: instantiate(groups[name]) for name in params}
    assert _count(ref.pretransform.model) == _count(ours["autoencoder"]) == params["autoencoder"]
    assert _count(ref.model.model) == _count(ours["dit"]) == params["dit"]
    assert _count(ref.conditioner) == _count(ours["conditioner"]) == params["conditioner"]
    assert _count(ref) == sum(params.values())
    converted = sat_weights.sat_to_musicdiff(ref.state_dict())
    for name, module in ours.items():
        assert {k: v.shape for k, v in converted[name].items()} == \
            {k: v.shape for k, v in module.state_dict().items()}, name
    back = sat_weights.musicdiff_to_sat(*(ours[n].state_dict() for n in ("autoencoder", "dit", "conditioner")))
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in ref.state_dict().items()}


def test_weights_round_trip_bit_exactly(small_pair):
    sat_model, ours, _, _ = small_pair
    original = sat_model.state_dict()
    back = sat_weights.musicdiff_to_sat(ours["autoencoder"].state_dict(), ours["dit"].state_dict(),
                                        ours["conditioner"].state_dict())
    assert set(back) == set(original)
    assert all(torch.equal(back[k], original[k]) for k in original)


def test_export_back_loads_strictly_into_sat(small_pair, t5_768):
    """musicdiff → SAT config + state dict → a fresh SAT model (strict) computes the same outputs."""
    sat_model, ours, groups, _ = small_pair
    sat_config = musicdiff_to_sat(OmegaConf.to_container(groups, resolve=True), t5_name="t5-base")
    fresh = build_sat_model(sat_config, t5_path=t5_768).eval()
    fresh.load_state_dict(sat_weights.musicdiff_to_sat(ours["autoencoder"].state_dict(), ours["dit"].state_dict(),
                                                       ours["conditioner"].state_dict()), strict=True)
    torch.manual_seed(0)
    x, t = torch.randn(1, 16, 8), torch.rand(1)
    meta = [{"prompt": "calm piano", "seconds_start": 1.0, "seconds_total": 9.0}]
    with torch.no_grad():
        cond = fresh.get_conditioning_inputs(fresh.conditioner(meta, "cpu"))
        ours_cond = ours["conditioner"](meta, "cpu")
        v = fresh.model(x, t, **cond)
        assert torch.equal(v, sat_model.model(x, t, **sat_model.get_conditioning_inputs(sat_model.conditioner(meta, "cpu"))))
        assert torch.allclose(v, ours["dit"](x, t, ours_cond["cross_attn_cond"], None, ours_cond["global_cond"]),
                              rtol=1e-5, atol=1e-6)


def test_biased_layernorm_is_refused():
    sd = {"model.model.transformer.layers.0.pre_norm.gamma": torch.ones(4),
          "model.model.transformer.layers.0.pre_norm.beta": torch.full((4,), 0.5)}
    with pytest.raises(sat_weights.SATKeyError, match="non-zero"):
        sat_weights.sat_to_musicdiff(sd)
    with pytest.raises(sat_weights.SATKeyError, match="outside"):
        sat_weights.sat_to_musicdiff({"diffusion_ema.foo": torch.zeros(1)})


def test_checkpoint_formats(tmp_path, small_pair):
    """``.safetensors``, a ``.ckpt`` with ``state_dict``, and a training-wrapper ``.ckpt`` (EMA) all read."""
    from safetensors.torch import save_file

    sat_model, _, _, _ = small_pair
    sd = {k: v.clone().contiguous() for k, v in sat_model.state_dict().items()}
    save_file(sd, str(tmp_path / "model.safetensors"))
    torch.save({"state_dict": sd}, tmp_path / "model.ckpt")
    wrapped = {"diffusion." + k: v for k, v in sd.items()}
    ema = {"diffusion_ema.ema_model." + k[len("model."):]: v + 1 for k, v in sd.items() if k.startswith("model.")}
    torch.save({"state_dict": {**wrapped, **ema, "diffusion_ema.initted": torch.tensor(True)}}, tmp_path / "train.ckpt")
    for path, kwargs in (("model.safetensors", {}), ("model.ckpt", {}), ("train.ckpt", {})):
        got = sat_weights.read_sat_checkpoint(tmp_path / path, **kwargs)
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd), path
    got = sat_weights.read_sat_checkpoint(tmp_path / "train.ckpt", ema=True)
    key = "model.model.transformer.project_in.weight"
    assert torch.equal(got[key], sd[key] + 1) and set(got) == set(sd)
