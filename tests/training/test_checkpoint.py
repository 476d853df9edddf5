"""Checkpoints: round trip, atomicity under a crash mid-save, rotation, no pickle on load."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from musicdiff.training import checkpoint as ckpt


def _model(seed=0):
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    return m


def test_round_trip_weights_state_and_rng(tmp_path):
    m = _model()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    m(torch.randn(3, 4)).sum().backward()
    opt.step()
    random.seed(1); np.random.seed(2); torch.manual_seed(3)
    state = {"step": 7, "optimizers": {"main": opt.state_dict()}, "rng": ckpt.rng_state()}
    expected = (random.random(), np.random.rand(), torch.rand(1))
    path = ckpt.save_checkpoint(tmp_path / "ck", 7, {"model": m}, state, {"a": 1}, "abc")
    assert (path / ckpt.COMPLETE).is_file() and path.name == "step_00000007"

    m2 = _model(seed=1)
    loaded = ckpt.load_checkpoint(path, {"model": m2})
    for a, b in zip(m.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-3)
    opt2.load_state_dict(loaded["optimizers"]["main"])
    assert loaded["step"] == 7
    ckpt.set_rng_state(loaded["rng"])
    got = (random.random(), np.random.rand(), torch.rand(1))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
    assert "a: 1" in (path / "config.yaml").read_text()


def test_tied_weights_save(tmp_path):
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    m = nn.ModuleDict({"emb": emb, "head": head})
    path = ckpt.save_checkpoint(tmp_path, 1, {"m": m}, {})
    m2 = nn.ModuleDict({"emb": nn.Embedding(10, 4), "head": nn.Linear(4, 10, bias=False)})
    ckpt.load_checkpoint(path, {"m": m2})
    assert torch.equal(m2["head"].weight, emb.weight)


def test_rotation_keeps_last_n(tmp_path):
    m = _model()
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, {"m": m}, {"step": step}, keep_last=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["step_00000003", "step_00000004"]
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000004"


def test_incomplete_checkpoint_is_ignored_and_rejected(tmp_path):
    m = _model()
    good = ckpt.save_checkpoint(tmp_path, 1, {"m": m}, {"step": 1})
    half = tmp_path / "step_00000002"
    half.mkdir()
    (half / ckpt.WEIGHTS).write_bytes(b"\x00" * 10)
    assert ckpt.latest_checkpoint(tmp_path) == good
    with pytest.raises(ckpt.CheckpointError, match="not a complete"):
        ckpt.load_checkpoint(half, {"m": m})


def test_kill_during_save_leaves_previous_checkpoint_usable(tmp_path):
    """A process killed (SIGKILL) in the middle of writing never leaves a visible half checkpoint."""
    m = _model()
    ckpt.save_checkpoint(tmp_path, 1, {"m": m}, {"step": 1})
    script = textwrap.dedent(f"""
        import os, signal, torch
        from torch import nn
        from musicdiff.training import checkpoint as ckpt
        import safetensors.torch as st
        orig = st.save_file
        def dying_save(*a, **k):
            orig(*a, **k)
            os.kill(os.getpid(), signal.SIGKILL)  # die right after the weights hit the disk
        ckpt.save_file = dying_save
        m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        ckpt.save_checkpoint({str(tmp_path)!r}, 2, {{"m": m}}, {{"step": 2}})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode != 0
    latest = ckpt.latest_checkpoint(tmp_path)
    assert latest.name == "step_00000001"
    assert ckpt.load_checkpoint(latest, {"m": _model()})["step"] == 1
    # the next save cleans up and succeeds
    ckpt.save_checkpoint(tmp_path, 2, {"m": m}, {"step": 2})
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000002"


def test_load_never_unpickles_objects(tmp_path):
    m = _model()
    path = ckpt.save_checkpoint(tmp_path, 1, {"m": m}, {"step": 1})

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"step": 1, "x": Evil()}, path / ckpt.STATE)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|global"):
        ckpt.load_checkpoint(path, {"m": m})


def test_mismatched_module_gives_clear_error(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, 1, {"m": _model()}, {})
    with pytest.raises(ckpt.CheckpointError, match="does not match"):
        ckpt.load_checkpoint(path, {"m": nn.Linear(3, 3)})


def test_clean_staging_restores_an_interrupted_replacement(tmp_path):
    """Leftovers of killed saves: a staging dir is deleted; the previous copy of a checkpoint that
    was being replaced (killed between the two renames) is put back."""
    m = _model()
    path = ckpt.save_checkpoint(tmp_path, 2, {"m": m}, {"step": 2})
    os.replace(path, tmp_path / ".old-step_00000002-999")  # the kill came after the first rename
    (tmp_path / ".tmp-step_00000003" / "deepspeed").mkdir(parents=True)
    assert ckpt.latest_checkpoint(tmp_path) is None
    ckpt.clean_staging(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000002"]
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path), {"m": _model(1)})["step"] == 2


def test_staged_checkpoint_keeps_other_ranks_files(tmp_path):
    """Files other ranks wrote into the staging dir (DeepSpeed shards) end up in the checkpoint."""
    staging = ckpt.begin_checkpoint(tmp_path, 5)
    assert staging == ckpt.staging_dir(tmp_path, 5)
    (staging / "deepspeed").mkdir()
    (staging / "deepspeed" / "zero_pp_rank_1_optim_states.pt").write_bytes(b"shard")
    path = ckpt.save_checkpoint(tmp_path, 5, {"m": _model()}, {"step": 5}, staging=staging)
    assert (path / "deepspeed" / "zero_pp_rank_1_optim_states.pt").read_bytes() == b"shard"
    assert "deepspeed/zero_pp_rank_1_optim_states.pt" in json.loads((path / ckpt.META).read_text())["files"]
    assert not staging.exists()
