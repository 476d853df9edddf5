"""Helpers for the autoencoder tests: build options of conf/autoencoder without the root config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.helpers.threads import single_thread  # noqa: F401  (autouse: one intra-op thread)

CONF = Path(__file__).resolve().parents[3] / "conf"


def load_autoencoder_cfg(name: str):
    """``{"autoencoder": <conf/autoencoder/name.yaml>}`` so that interpolations resolve."""
    return OmegaConf.create({"autoencoder": OmegaConf.load(CONF / "autoencoder" / f"{name}.yaml")})


@pytest.fixture()
def tiny_autoencoder():
    torch.manual_seed(0)
    return instantiate(load_autoencoder_cfg("tiny").autoencoder).eval()
