"""Checkpoint import/export and parity with the stable-audio-tools reference implementation.

* :mod:`~musicdiff.reference.sat_config`: SAT ``model_config.json`` ↔ musicdiff config groups.
* :mod:`~musicdiff.reference.sat_presets`: Stable Audio Open's ``model_config.json`` at any size.
* :mod:`~musicdiff.reference.sat_weights`: SAT state dict ↔ autoencoder/DiT/conditioner weights.
* :mod:`~musicdiff.reference.import_sat` / :mod:`~musicdiff.reference.export_sat`: the CLIs
  (``python -m musicdiff.reference.import_sat in=... out=...``).
* :mod:`~musicdiff.reference.sat_reference`: loads SAT itself for parity tests and benchmarks.
"""

from musicdiff.reference.sat_config import UnsupportedSATConfig, musicdiff_to_sat, sat_to_musicdiff
from musicdiff.reference.sat_presets import stable_audio_open_config
from musicdiff.reference.sat_weights import read_sat_checkpoint

__all__ = [
    "UnsupportedSATConfig",
    "musicdiff_to_sat",
    "read_sat_checkpoint",
    "sat_to_musicdiff",
    "stable_audio_open_config",
]
