"""The trained tiny pipeline as modules in memory, for tests whose behaviour depends on trained models
(inpainting, audio-to-audio, memorization of autoencoded copies).

Training is :func:`tests.helpers.tiny_pipeline.tiny_pipeline` (tiny autoencoder → latents → tiny DiT
on square/saw notes C4 E4 G4 B4, as ``experiments/demo/run.sh``), run once per session under
:data:`SESSION_DIR` of pytest's base temp dir; the ``tiny_pipeline_paths`` and ``trained_tiny``
fixtures of ``tests/conftest.py`` share it. Models are built from ``conf/`` (``experiment=tiny``)
and the exported ``<part>.safetensors`` weights are loaded with a strict key check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file
from torch import nn

from musicdiff.data.synthetic import synthesize_item
from musicdiff.sampling import Generator

SESSION_DIR = "tiny_pipeline"  # under tmp_path_factory.getbasetemp(): one training per test session
WINDOW_SECONDS = 1.0  # the DiT's training crop


@dataclass
class TrainedTiny:
    """Trained tiny autoencoder, DiT (EMA) and conditioner, in eval mode on the CPU."""

    paths: dict[str, Path]
    autoencoder: nn.Module
    dit: nn.Module
    conditioner: nn.Module

    @property
    def sample_rate(self) -> int:
        return int(self.autoencoder.sample_rate)

    def generator(self, sampler: str = "dpmpp_2m", steps: int = 25, cfg_scale: float = 4.0) -> Generator:
        """A :class:`Generator` over the trained models with a ``conf/sampler`` option."""
        from tests.conftest import compose_root

        cfg = compose_root("generate", [f"sampler={sampler}", f"sampler.steps={steps}",
                                        f"sampler.cfg_scale={cfg_scale}"])
        ratio = self.autoencoder.downsampling_ratio
        window = int(np.ceil(WINDOW_SECONDS * self.sample_rate / ratio))
        return Generator(self.autoencoder, self.dit, self.conditioner, instantiate(cfg.sampler),
                         window_latents=window, decode_chunk_latents=None)


def _load(module: nn.Module, file: Path) -> nn.Module:
    module.load_state_dict(load_file(str(file)), strict=True)
    return module.eval().requires_grad_(False)


def load_trained_tiny(paths: dict[str, Path]) -> TrainedTiny:
    """Builds the tiny models from ``conf/`` and loads the weights exported by ``tiny_pipeline``."""
    from tests.conftest import compose_root

    cfg = compose_root("train", ["experiment=tiny"])
    return TrainedTiny(
        paths=paths,
        autoencoder=_load(instantiate(cfg.autoencoder), paths["autoencoder"] / "autoencoder.safetensors"),
        dit=_load(instantiate(cfg.dit), paths["dit"] / "dit.safetensors"),
        conditioner=_load(instantiate(cfg.conditioner), paths["dit"] / "conditioner.safetensors"),
    )


def note_clip(note: str, instrument: str = "square", seconds: float = 1.0, sample_rate: int = 16000,
              seed: int = 0) -> tuple[torch.Tensor, dict]:
    """A stereo synthetic clip ``[2, T]`` of ``instrument`` playing ``note`` (training distribution)."""
    audio, fields = synthesize_item(seed, sample_rate, seconds, seed=1234, instruments=[instrument], notes=[note],
                                    chord_prob=0.0)
    return torch.from_numpy(np.ascontiguousarray(audio.T)), fields
