"""Fixtures for the stable-audio-tools parity tests: the reference package, a tiny 768-wide T5,
and one reduced-size Stable Audio Open model in SAT with its musicdiff conversion."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers.stable_audio_tools import load_sat, randomize_

WINDOW_LATENTS = 16  # latent frames of the reduced model's window


def small_sao_config() -> dict:
    """Stable Audio Open's layout at test size (T5 tokens projected 768 → 64, GQA cross-attention)."""
    from musicdiff.reference import stable_audio_open_config

    return stable_audio_open_config(ae_channels=4, latent_dim=16, embed_dim=128, depth=2, num_heads=2,
                                    cond_dim=64, sample_size=WINDOW_LATENTS * 2048)


@pytest.fixture(scope="session")
def sat():
    """The stable_audio_tools package (the test is skipped when it is not installed)."""
    return load_sat()


@pytest.fixture(scope="session")
def t5_768(tmp_path_factory):
    """A random 2-layer T5 encoder as wide as t5-base (768), saved locally."""
    from tests.helpers.tiny_text_models import make_tiny_t5

    return make_tiny_t5(tmp_path_factory.mktemp("t5_768"), d_model=768)


@pytest.fixture(scope="session")
def small_pair(sat, t5_768):
    """``(sat_model, {"autoencoder", "dit", "conditioner"}, musicdiff_groups, sat_config)`` with equal weights."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from musicdiff.reference import sat_to_musicdiff
    from musicdiff.reference.sat_reference import build_sat_model
    from musicdiff.reference.sat_weights import sat_to_musicdiff as convert_weights

    config = small_sao_config()
    torch.manual_seed(0)
    sat_model = build_sat_model(config, t5_path=t5_768).eval()
    randomize_(sat_model, seed=1)
    groups = OmegaConf.create(sat_to_musicdiff(config, t5_path=t5_768))
    tensors = convert_weights(sat_model.state_dict())
    ours = {}
    for name in ("autoencoder", "dit", "conditioner"):
        ours[name] = instantiate(groups[name]).eval()
        ours[name].load_state_dict(tensors[name], strict=True)
    return sat_model, ours, groups, config


@pytest.fixture()
def sat_release(small_pair, tmp_path):
    """The reduced model written like the Stable Audio Open release."""
    sat_model, _, _, config = small_pair
    root = tmp_path / "stable-audio-open-small"
    root.mkdir()
    save_file({k: v.contiguous() for k, v in sat_model.state_dict().items()}, str(root / "model.safetensors"))
    (root / "model_config.json").write_text(json.dumps(config, indent=4))
    return root
