"""The loading layer: every source kind, relocation, strict keys, damaged and hostile files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict
from torch.optim.swa_utils import AveragedModel

from musicdiff.pretrained import PretrainedError, UnsafeConfigError, load_pretrained, model_config, write_export
from musicdiff.training import checkpoint as ckpt

PARTS = ("autoencoder", "dit", "conditioner")


@pytest.fixture()
def tiny(compose_cfg):
    """The tiny model's config and its three parts with seeded random weights."""
    cfg = compose_cfg("train", ["experiment=tiny", "logger=none"])
    torch.manual_seed(0)
    modules = {g: instantiate(cfg[g]).eval() for g in PARTS}
    return cfg, modules


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_export_round_trip_is_exact(tiny, tmp_path):
    cfg, modules = tiny
    out = write_export(tmp_path / "export", modules, cfg, "abc")
    pre = load_pretrained(out)
    assert pre.kind == "export" and pre.window_seconds == cfg.dataset.window_seconds
    for name in PARTS:
        assert _same(getattr(pre, name), modules[name]), name
    assert pre.window_latents() == round(cfg.dataset.window_seconds * pre.latent_rate + 0.4999)
    only = load_pretrained(out, parts=("autoencoder",))
    assert only.dit is None and only.conditioner is None and _same(only.autoencoder, modules["autoencoder"])


def test_moved_exports_find_their_autoencoder(tiny, tmp_path):
    """A DiT export that records its autoencoder's export (relative path) still loads after both move."""
    cfg, modules = tiny
    ae = write_export(tmp_path / "a" / "ae_export", {"autoencoder": modules["autoencoder"]}, cfg)
    with open_dict(cfg):
        cfg.autoencoder_from = str(ae)
    dit = write_export(tmp_path / "a" / "dit_export", {k: modules[k] for k in ("dit", "conditioner")}, cfg)
    assert "autoencoder_from: ../ae_export" in (dit / "config.yaml").read_text()
    shutil.move(tmp_path / "a", tmp_path / "elsewhere")
    pre = load_pretrained(tmp_path / "elsewhere" / "dit_export")
    assert _same(pre.autoencoder, modules["autoencoder"]) and _same(pre.dit, modules["dit"])


def test_training_checkpoint_gives_the_ema_dit(tiny, tmp_path):
    cfg, modules = tiny
    ae = write_export(tmp_path / "ae", {"autoencoder": modules["autoencoder"]}, cfg)
    ema = AveragedModel(modules["dit"])
    raw = instantiate(cfg.dit)  # different weights from the EMA copy
    with open_dict(cfg):
        cfg.autoencoder_from = str(ae)
    path = ckpt.save_checkpoint(tmp_path / "checkpoints", 7, {"dit": raw, "ema": ema,
                                                            "conditioner": modules["conditioner"]}, {"step": 7}, cfg)
    pre = load_pretrained(path)
    assert pre.kind == "checkpoint" and _same(pre.dit, modules["dit"]) and _same(pre.autoencoder, modules["autoencoder"])
    assert _same(load_pretrained(path, use_ema=False, parts=("dit",)).dit, raw)


def test_wrong_architecture_lists_the_keys(tiny, tmp_path):
    cfg, modules = tiny
    out = write_export(tmp_path / "export", modules, cfg)
    text = (out / "config.yaml").read_text().replace("depth: 2", "depth: 3")
    (out / "config.yaml").write_text(text)
    (out / "meta.json").unlink()  # an older export without checksums: the key check still catches it
    with pytest.raises(PretrainedError, match=r"dit does not match its config: missing keys \['transformer.layers.2"):
        load_pretrained(out)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_export_names_the_file(tiny, tmp_path, damage):
    cfg, modules = tiny
    out = write_export(tmp_path / "export", modules, cfg)
    file = out / "dit.safetensors"
    data = bytearray(file.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    else:
        data = data[: len(data) // 2]
    file.write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match="dit.safetensors"):
        load_pretrained(out)


def test_missing_and_incomplete_sources_are_clear(tiny, tmp_path):
    cfg, modules = tiny
    with pytest.raises(PretrainedError, match="not found"):
        load_pretrained(tmp_path / "nope")
    out = write_export(tmp_path / "export", modules, cfg)
    (out / "COMPLETE").unlink()
    with pytest.raises(PretrainedError, match="no COMPLETE marker"):
        load_pretrained(out)
    only_ae = write_export(tmp_path / "ae", {"autoencoder": modules["autoencoder"]}, cfg)
    with pytest.raises(PretrainedError, match="no dit weights"):
        load_pretrained(only_ae)


def test_non_finite_weights_are_never_exported(tiny, tmp_path):
    cfg, modules = tiny
    with torch.no_grad():
        next(modules["dit"].parameters()).view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="dit"):
        write_export(tmp_path / "export", modules, cfg)
    assert not (tmp_path / "export").exists() and not list(tmp_path.glob(".tmp-*"))


HOSTILE = {
    # torch.load of a pickle that runs code when unpickled
    "torch_load": {"_target_": "torch.load", "f": "{pickle}", "weights_only": False},
    "os_system": {"_target_": "os.system", "_args_": ["touch {marker}"]},
    # a real callable reached through a musicdiff module's namespace
    "via_musicdiff": {"_target_": "musicdiff.models.dit.transformer.torch.load", "f": "{pickle}", "weights_only": False},
    # a torch class, not a musicdiff model
    "foreign_class": {"_target_": "musicdiff.models.dit.transformer.nn.Linear", "in_features": 1, "out_features": 1},
}


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_export_is_refused_before_anything_runs(tiny, tmp_path, kind):
    """An export whose config names a callable outside the allow-list: refused, nothing executed."""
    cfg, modules = tiny
    marker = tmp_path / "PWNED"
    pickle_file = tmp_path / "payload.pt"
    torch.save(_Payload(str(marker)), pickle_file)
    out = write_export(tmp_path / "export", modules, cfg)
    node = {k: (v.format(pickle=pickle_file, marker=marker) if isinstance(v, str) else
                [a.format(marker=marker) for a in v] if isinstance(v, list) else v) for k, v in HOSTILE[kind].items()}
    stored = OmegaConf.load(out / "config.yaml")
    stored.conditioner.conditioners.prompt = node
    (out / "config.yaml").write_text(OmegaConf.to_yaml(stored))
    (out / "meta.json").unlink()  # as an attacker would: no checksum to stop it first
    for load in (lambda: load_pretrained(out), lambda: model_config(out)):
        with pytest.raises(UnsafeConfigError, match="refusing conditioner.conditioners.prompt._target_"):
            load()
    assert not marker.exists()
