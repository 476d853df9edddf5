"""SAT ``model_config.json`` ↔ musicdiff config groups (no reference package needed)."""

from __future__ import annotations

import copy
import math

import pytest
from omegaconf import OmegaConf

from musicdiff.reference import UnsupportedSATConfig, musicdiff_to_sat, sat_to_musicdiff, stable_audio_open_config
from musicdiff.reference.sat_config import window_seconds


def _normalise(node: dict) -> dict:
    """Drop settings that do not change the network (memory options, T5 location)."""
    node = copy.deepcopy(node)
    for key in ("gradient_checkpointing", "checkpointing"):
        node.pop(key, None)
    for part in ("encoder", "decoder"):
        if isinstance(node.get(part), dict):
            node[part].pop("checkpointing", None)
            if not node[part].get("use_nearest_upsample", False):  # default: transposed convs
                node[part].pop("use_nearest_upsample", None)
    if node.get("rotary_dim") is None and "width" in node:
        node["rotary_dim"] = node["width"] // node["num_heads"] // 2
    for sub in (node.get("conditioners") or {}).values():
        sub.pop("model_name", None)
    return node


def test_stable_audio_open_maps_onto_the_sa2_presets(compose_cfg):
    groups = sat_to_musicdiff(stable_audio_open_config())
    cfg = compose_cfg("generate", ["autoencoder=oobleck_sa2", "dit=sa2", "conditioner=t5_timing"])
    for name in ("autoencoder", "dit", "conditioner"):
        preset = OmegaConf.to_container(cfg[name], resolve=False)
        if name == "dit":  # interpolations into the other groups
            preset.update(io_channels=64, cond_token_dim=768, global_cond_dim=1536)
        if name == "autoencoder":
            preset["encoder"]["in_channels"] = preset["decoder"]["out_channels"] = 2
            preset["decoder"]["latent_dim"] = 64
        if name == "conditioner":
            for sub in preset["conditioners"].values():
                sub["output_dim"] = 768
        assert _normalise(groups[name]) == _normalise(preset), name
    # 2097152 samples = 1024 latents: the generation window round-trips exactly
    ws = groups["dataset"]["window_seconds"]
    assert math.ceil(ws * 44100 / 2048) == 1024 and abs(ws - 2097152 / 44100) < 1e-9


def test_t5_location_is_resolved_when_built(monkeypatch):
    groups = OmegaConf.create(sat_to_musicdiff(stable_audio_open_config()))
    text = OmegaConf.to_yaml(groups, resolve=True)  # what an export writes
    reloaded = OmegaConf.create(text)
    monkeypatch.setenv("MUSICDIFF_T5_PATH", "/models/t5-base")
    assert reloaded.conditioner.conditioners.prompt.model_name == "/models/t5-base"
    monkeypatch.delenv("MUSICDIFF_T5_PATH")
    assert reloaded.conditioner.conditioners.prompt.model_name == "google-t5/t5-base"
    local = sat_to_musicdiff(stable_audio_open_config(), t5_path="/data/t5")
    assert local["conditioner"]["conditioners"]["prompt"]["model_name"] == "/data/t5"


def test_round_trip_back_to_sat():
    original = stable_audio_open_config(ae_channels=8, embed_dim=256, depth=3, num_heads=4, cond_dim=64,
                                        sample_size=100 * 2048)
    back = musicdiff_to_sat(sat_to_musicdiff(original))
    assert back["sample_size"] == original["sample_size"]
    assert back["model"]["diffusion"]["config"] | {"rotary_pos_emb": True} == \
        original["model"]["diffusion"]["config"] | {"project_global_cond": True, "rotary_pos_emb": True}
    assert back["model"]["conditioning"]["configs"][0]["config"]["t5_model_name"] == "t5-base"
    assert [c["id"] for c in back["model"]["conditioning"]["configs"]] == ["prompt", "seconds_start", "seconds_total"]
    for part in ("encoder", "decoder"):
        assert back["model"]["pretransform"]["config"][part] == original["model"]["pretransform"]["config"][part]
    assert sat_to_musicdiff(back) == sat_to_musicdiff(original)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model"]["diffusion"]["config"].update(patch_size=2), "patch_size"),
    (lambda c: c["model"]["diffusion"]["config"].update(global_cond_type="adaLN"), "global_cond_type"),
    (lambda c: c["model"]["diffusion"].update(diffusion_objective="x0"), "diffusion_objective"),
    (lambda c: c["model"]["diffusion"]["config"].update(attn_kwargs={"qk_norm": "l2"}), "qk_norm='l2'"),
    (lambda c: c["model"]["diffusion"]["config"].update(attn_kwargs={"qk_norm": "dyt"}), "qk_norm='dyt'"),
    (lambda c: c["model"]["diffusion"]["config"].update(attn_kwargs={"qk_norm": "ln", "differential": True}),
     "differential"),
    (lambda c: c["model"]["conditioning"]["configs"].append({"id": "x", "type": "clap_text", "config": {}}),
     "clap_text"),
    (lambda c: c["model"]["pretransform"]["config"]["bottleneck"].update(type="rvq"), "bottleneck"),
    (lambda c: c["model"]["pretransform"].update(scale=2.0), "scale"),
])
def test_unsupported_features_are_refused(edit, message):
    cfg = stable_audio_open_config()
    edit(cfg)
    with pytest.raises(UnsupportedSATConfig, match=message):
        sat_to_musicdiff(cfg)


def test_musicdiff_only_options_are_refused_on_export(compose_cfg):
    cfg = compose_cfg("generate", [])  # tiny LUT conditioner, masked cross-attention
    with pytest.raises(UnsupportedSATConfig):
        musicdiff_to_sat(cfg, window_seconds=1.0)


@pytest.mark.parametrize("sample_rate, ratio", [(44100, 2048), (44100, 64), (48000, 512), (16000, 64)])
def test_window_seconds_gives_back_the_latent_count(sample_rate, ratio):
    for latents in range(1, 3000, 7):
        seconds = window_seconds(latents * ratio, ratio, sample_rate)
        assert math.ceil(seconds * sample_rate / ratio) == latents
        assert abs(seconds - latents * ratio / sample_rate) < 1e-9
