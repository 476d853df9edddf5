"""``musicdiff.files.state_dict``: foreign weights files are read as tensors only, with one clear line."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from musicdiff.files.state_dict import read_state_dict, state_dict_mismatch


class Hparams:  # an arbitrary pickled object, as Lightning checkpoints hold
    lr = 1e-4


def test_reads_safetensors_and_unwraps_checkpoints_in_order(tmp_path):
    w = {"a": torch.ones(2), "b": torch.zeros(3)}
    save_file(w, str(tmp_path / "w.safetensors"))
    assert read_state_dict(tmp_path / "w.safetensors", "X").keys() == w.keys()
    torch.save({"model": {"m": torch.ones(1)}, "state_dict": w, "step": 3}, tmp_path / "ckpt.pt")
    assert read_state_dict(tmp_path / "ckpt.pt", "X", unwrap=("state_dict", "model")).keys() == w.keys()
    assert read_state_dict(tmp_path / "ckpt.pt", "X", unwrap=("model",)).keys() == {"m"}
    torch.save({**w, "step": 3}, tmp_path / "plain.pt")  # a bare state dict: non-tensors dropped
    assert read_state_dict(tmp_path / "plain.pt", "X").keys() == w.keys()


def test_pickled_objects_and_non_dicts_are_refused_naming_the_file(tmp_path):
    torch.save({"state_dict": {"a": torch.ones(1)}, "hparams": Hparams()}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match=r"PaSST weights .*pickled\.pt holds objects other than tensors.*unwrap"):
        read_state_dict(tmp_path / "pickled.pt", "PaSST weights", pickle_hint="unwrap it")
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt: expected a state dict .*got list"):
        read_state_dict(tmp_path / "list.pt", "OpenL3 weights")


def test_mismatch_names_missing_unexpected_and_wrong_shapes():
    expected = {"a": torch.ones(2), "b": torch.ones(3), "c": torch.ones(1)}
    assert state_dict_mismatch(dict(expected), expected) is None
    got = state_dict_mismatch({"a": torch.ones(2), "b": torch.ones(4), "d": torch.ones(1)}, expected)
    assert got == "missing ['c'], unexpected ['d'], wrong shapes ['b']"
