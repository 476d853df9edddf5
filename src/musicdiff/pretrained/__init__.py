"""One loading layer for trained models: exports, training checkpoints, stable-audio-tools checkpoints, adapters.

Every entry point opens trained parts through :func:`load_pretrained` (like diffusers'
``from_pretrained``); :func:`write_export` writes the inference directory that it reads back.
"""

from musicdiff.pretrained.export import write_export
from musicdiff.pretrained.load import (
    PARTS,
    Pretrained,
    PretrainedError,
    detect,
    load_pretrained,
    model_config,
    read_weights,
)
from musicdiff.pretrained.safe_config import UnsafeConfigError, check_targets

__all__ = ["PARTS", "Pretrained", "PretrainedError", "UnsafeConfigError", "check_targets", "detect",
           "load_pretrained", "model_config", "read_weights", "write_export"]
