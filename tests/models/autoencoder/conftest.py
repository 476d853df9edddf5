"""Helpers for the autoencoder tests: build options of conf/autoencoder without the root config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[3] / "conf"


def load_autoencoder_cfg(name: str):
    """``{"autoencoder": <conf/autoencoder/name.yaml>}`` so that interpolations resolve."""
    return OmegaConf.create({"autoencoder": OmegaConf.load(CONF / "autoencoder" / f"{name}.yaml")})


@pytest.fixture(autouse=True)
def _single_thread():
    """Small convolutions gain nothing from a second thread, and spin-waiting intra-op threads slow
    them down 10x+ when the CPU is shared with other jobs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture()
def tiny_autoencoder():
    torch.manual_seed(0)
    return instantiate(load_autoencoder_cfg("tiny").autoencoder).eval()
