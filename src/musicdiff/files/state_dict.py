"""Read a tensor state dict from a foreign weights file, never executing code from it.

Shared by the Stable Audio Open importer (``reference/sat_weights.py``) and the evaluation networks
whose weights users download themselves (``evaluation/openl3.py``, ``evaluation/passt.py``).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch


def read_state_dict(path: str | Path, what: str, unwrap: Sequence[str] = ("state_dict",),
                    pickle_hint: str = "save the tensors alone (or as .safetensors)") -> dict[str, torch.Tensor]:
    """Tensors of ``path``: a ``.safetensors`` file, or a torch file read with ``weights_only=True``.

    Args:
        path: the weights file.
        what: what the file is, for error lines (e.g. ``"PaSST weights"``).
        unwrap: keys of a checkpoint dict that hold the state dict, tried in order (the dict itself
            when none is present).
        pickle_hint: how to fix a torch file that holds objects other than tensors.

    Returns:
        ``{name: tensor}``; non-tensor entries of a torch file are dropped.

    Raises:
        ValueError: one line naming ``path``: pickled objects other than tensors, or no state dict.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # e.g. a Lightning checkpoint with pickled callbacks/hparams
        raise ValueError(f"{what} {path} holds objects other than tensors and is only read with "
                         f"weights_only=True: {pickle_hint}") from err
    if isinstance(obj, Mapping):
        obj = next((obj[k] for k in unwrap if k in obj), obj)
    if not isinstance(obj, Mapping):
        raise ValueError(f"{what} {path}: expected a state dict (or a dict with {' / '.join(map(repr, unwrap))}), "
                         f"got {type(obj).__name__}")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def state_dict_mismatch(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> str | None:
    """``"missing [...], unexpected [...], wrong shapes [...]"`` (3 names each) or None when the keys and
    shapes of ``state`` match ``expected`` exactly."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if not (missing or unexpected or wrong):
        return None
    return f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}"
