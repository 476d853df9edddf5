"""Checkpoint integrity (issue 13): checksums, fallback past damaged checkpoints, rotation that keeps
the last good one, refusal of non-finite weights, disk full, garbage files, Trainer argument checks.

The faults are injected into checkpoints of real (tiny) Trainer runs: a single flipped bit in the
newest ``model.safetensors`` turns a weight into ~1e38, which the old code loaded silently.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import struct

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from musicdiff.files.checksums import (
    NonFiniteWeightsError,
    assert_finite,
    file_records,
    has_checksums,
    sha256_file,
    verify_records,
)
from musicdiff.training import checkpoint as ckpt
from musicdiff.training.tasks.base import Task as TaskBase
from musicdiff.training.trainer import Trainer
from tests.training.test_trainer import ToyData as Data  # y = x @ w, learnt in a few dozen steps


class Task(TaskBase):
    def __init__(self, poison_at=None):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 1)
        self.poison_at = poison_at

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.net.parameters(), lr=0.05)
        return {"main": (opt, None)}

    def training_step(self, batch, step, ctx):
        y = torch.tensor([float(m["prompt"]) for m in batch["metadata"]])
        loss = ((self.net(batch["audio"]).squeeze(-1) - y) ** 2).mean()
        ctx.backward_step("main", loss)
        return {"loss": loss.item()}

    def on_step_end(self, step):
        if step == self.poison_at:  # weights blow up although the loss looked finite
            with torch.no_grad():
                self.net.weight[0, 1] = float("inf")

    def export(self):
        return {"net": self.net}


def _fit(run_dir, task=None, **kw):
    args = dict(max_steps=40, batch_size=8, log_every=10, grad_clip=0.0, checkpoint_every=10, keep_last=2,
                progress=False, cpu=True)
    args.update(kw)
    trainer = Trainer(**args)
    task = task or Task()
    trainer.fit(task, Data(), run_dir=run_dir)
    return trainer, task


def _flip_exponent_bit(path, key="task.net.weight"):
    """Flip bit 30 (top exponent bit) of one float32 weight with |w| < 2: it becomes ~1e38."""
    raw = bytearray(path.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    start, _ = header[key]["data_offsets"]
    values = load_file(str(path))[key].flatten()
    i = int((values.abs() < 2).nonzero()[0])
    raw[8 + n + start + 4 * i + 3] ^= 0x40
    path.write_bytes(bytes(raw))


def _one_line(exc) -> str:
    text = str(exc.value if hasattr(exc, "value") else exc)
    assert "\n" not in text, text
    return text


def test_checksum_records_name_bad_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"abcdef")
    (tmp_path / "sub" / "b.bin").write_bytes(b"xyz")
    (tmp_path / "meta.json").write_text("{}")
    records = file_records(tmp_path)
    assert set(records) == {"a.bin", "sub/b.bin"} and has_checksums(records)
    assert records["a.bin"] == {"size": 6, "sha256": sha256_file(tmp_path / "a.bin")}
    assert verify_records(tmp_path, records) == []
    (tmp_path / "a.bin").write_bytes(b"abcdeX")  # same size, one byte changed
    (tmp_path / "sub" / "b.bin").write_bytes(b"x")
    problems = verify_records(tmp_path, records)
    assert "a.bin: SHA-256 checksum mismatch" in problems[0]
    assert "b.bin: 1 bytes but 3 were written (truncated)" in problems[1]
    (tmp_path / "a.bin").unlink()
    assert verify_records(tmp_path, records)[0].endswith("a.bin: missing")
    legacy = {"sub/b.bin": 3}  # what checkpoints recorded before checksums: sizes only
    assert not has_checksums(legacy) and "truncated" in verify_records(tmp_path, legacy)[0]


def test_assert_finite_names_the_first_bad_tensor():
    good = {"a": torch.ones(3), "steps": torch.tensor([1, 2])}
    assert_finite(good, "x")
    with pytest.raises(NonFiniteWeightsError, match=r"refusing to write export: tensor 'b' has 2 non-finite"):
        assert_finite({**good, "b": torch.tensor([1.0, math.nan, math.inf]), "c": torch.tensor([math.nan])}, "export")


def test_bit_flip_in_newest_checkpoint_falls_back_and_training_finishes(tmp_path, caplog):
    """The issue's data-loss story: a flipped bit in the newest weights used to load silently (every
    step then skipped, rotation deleting the good checkpoints). Now resume skips it, says so, goes
    on from the older checkpoint and ends exactly where an uninterrupted run ends."""
    run = tmp_path / "run"
    _fit(run)
    root = run / "checkpoints"
    bad = root / "step_00000040"
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000030", "step_00000040"]
    _flip_exponent_bit(bad / ckpt.WEIGHTS)
    probe = Task()
    ckpt.load_checkpoint(bad, {"task": probe})  # without verification the damage is invisible ...
    assert probe.net.weight.abs().max() > 1e30  # ... and ruinous

    with caplog.at_level(logging.WARNING, logger="musicdiff"):
        trainer, task = _fit(run, max_steps=60)
    warnings = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert f"{bad / ckpt.WEIGHTS}: SHA-256 checksum mismatch" in warnings
    assert f"falling back to {root / 'step_00000030'}" in warnings
    assert trainer.step == 60
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000050", "step_00000060"]
    assert all(ckpt.verify_checkpoint(p) == [] for p in ckpt.list_checkpoints(root))
    exported = load_file(str(run / "export" / "net.safetensors"))
    assert all(torch.isfinite(t).all() for t in exported.values())
    _, reference = _fit(tmp_path / "uninterrupted", max_steps=60, checkpoint_every=0)
    for a, b in zip(reference.parameters(), task.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_bit_flip_in_a_tiny_dit_run_through_the_cli(tmp_path, caplog):
    """The same story through ``musicdiff-train experiment=tiny`` (DiT + EMA + conditioner): the resumed
    run skips the damaged step-4 checkpoint, no step is lost to non-finite losses, and the
    checkpoints and the export hold finite weights."""
    from musicdiff.cli.train import train
    from tests.conftest import compose_root

    run = tmp_path / "run"

    def overrides(steps):
        return ["experiment=tiny", "logger=none", "dataset.num_items=8", "task.demo_prompts=[]",
                f"trainer.max_steps={steps}", "trainer.batch_size=2", "trainer.checkpoint_every=2",
                "trainer.keep_last=2", "trainer.progress=false", f"paths.log_dir={tmp_path / 'outputs'}",
                f"paths.output_dir={run}"]

    train(compose_root("train", overrides(4)))
    root = run / "checkpoints"
    bad = root / "step_00000004" / ckpt.WEIGHTS
    _flip_exponent_bit(bad, "dit.transformer.layers.0.self_attn.to_qkv.weight")
    with caplog.at_level(logging.WARNING, logger="musicdiff"):
        metrics = train(compose_root("train", overrides(6)))
    assert f"{bad}: SHA-256 checksum mismatch" in caplog.text
    assert f"falling back to {root / 'step_00000002'}" in caplog.text
    assert metrics["step"] == 6 and metrics["skipped_nonfinite"] == 0  # the ~1e38 weight was never trained on
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000004", "step_00000006"]
    for path in ckpt.list_checkpoints(root):
        assert ckpt.verify_checkpoint(path) == []
        assert all(torch.isfinite(t).all() for t in load_file(str(path / ckpt.WEIGHTS)).values())
    for name in ("dit", "conditioner"):
        assert all(torch.isfinite(t).all() for t in load_file(str(run / "export" / f"{name}.safetensors")).values())


def test_rotation_never_deletes_the_newest_verified_checkpoint(tmp_path, monkeypatch, caplog):
    m = nn.Linear(4, 2)
    ckpt.save_checkpoint(tmp_path, 1, {"m": m}, {"step": 1}, keep_last=1)
    real_records = ckpt.file_records

    def lying_records(directory):  # the new checkpoint's weights do not match what was recorded
        records = real_records(directory)
        records[ckpt.WEIGHTS]["sha256"] = "0" * 64
        return records

    monkeypatch.setattr(ckpt, "file_records", lying_records)
    with caplog.at_level(logging.ERROR, logger="musicdiff"):
        ckpt.save_checkpoint(tmp_path, 2, {"m": m}, {"step": 2}, keep_last=1)
    assert "step_00000002 fails verification right after writing" in caplog.text
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000001", "step_00000002"]
    assert ckpt.latest_verified_checkpoint(tmp_path).name == "step_00000001"
    assert ckpt.rotate_checkpoints(tmp_path, 1) == []  # still protected on a later rotation
    monkeypatch.undo()
    ckpt.save_checkpoint(tmp_path, 3, {"m": m}, {"step": 3}, keep_last=1)  # a good newer one: now rotation may
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000003"]


def test_no_usable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    run = tmp_path / "run"
    _fit(run, max_steps=10, keep_last=1)
    _flip_exponent_bit(run / "checkpoints" / "step_00000010" / ckpt.WEIGHTS)
    with pytest.raises(ckpt.CorruptCheckpointError, match="no checkpoint under .* is usable") as e:
        _fit(run, max_steps=20)
    _one_line(e)
    assert (run / "checkpoints" / "step_00000010").is_dir()


def test_truncated_weights_are_named(tmp_path):
    run = tmp_path / "run"
    _fit(run, max_steps=10)
    path = run / "checkpoints" / "step_00000010"
    weights = path / ckpt.WEIGHTS
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])
    with pytest.raises(ckpt.CheckpointError, match=re.escape(f"trainer.resume={path}: {weights}: {size // 2} bytes but "
                                                                f"{size} were written (truncated)")) as e:
        _fit(tmp_path / "other", max_steps=20, resume=str(path))
    _one_line(e)
    with pytest.raises(ckpt.CorruptCheckpointError, match=re.escape(f"{weights}: unreadable")) as e:
        ckpt.load_checkpoint(path, {"task": Task()})  # even without checksums the file is named
    _one_line(e)


def test_garbage_state_falls_back_with_one_line_naming_the_file(tmp_path, caplog):
    run = tmp_path / "run"
    _fit(run, max_steps=20)
    root = run / "checkpoints"
    state = root / "step_00000020" / ckpt.STATE
    state.write_bytes(os.urandom(state.stat().st_size))
    with pytest.raises(ckpt.CorruptCheckpointError, match=re.escape(f"{state}: not a training state")) as e:
        ckpt.load_checkpoint(state.parent, {"task": Task()})
    _one_line(e)
    # Checksums catch it before loading ...
    assert "SHA-256 checksum mismatch" in ckpt.verify_checkpoint(state.parent)[0]
    # ... and an older checkpoint without checksums (sizes match) fails at load: auto-resume falls back too.
    meta_path = state.parent / ckpt.META
    meta = json.loads(meta_path.read_text())
    meta["files"] = {k: v["size"] for k, v in meta["files"].items()}
    meta_path.write_text(json.dumps(meta))
    with caplog.at_level(logging.INFO, logger="musicdiff"):
        trainer, _ = _fit(run, max_steps=30)
    assert "written without checksums (older musicdiff): checking file sizes only" in caplog.text
    assert f"{state}: not a training state written by musicdiff" in caplog.text
    assert f"resumed from {root / 'step_00000010'} at step 10" in caplog.text
    assert trainer.step == 30


def test_disk_full_during_checkpoint(tmp_path, monkeypatch):
    """ENOSPC while writing step 20: one line naming the checkpoint, no staging left, step 10 intact."""
    calls = []
    real = ckpt.save_file

    def save_until_full(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", save_until_full)
    run = tmp_path / "run"
    target = run / "checkpoints" / "step_00000020"
    with pytest.raises(ckpt.CheckpointError, match=re.escape(f"could not write checkpoint {target}: No space left")) as e:
        _fit(run, max_steps=20)
    assert "previous checkpoints are intact" in _one_line(e)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000010"]
    assert ckpt.verify_checkpoint(run / "checkpoints" / "step_00000010") == []
    assert not (run / "export").exists()
    # torch.save's own failure on a full disk (a C++ stream error) reads the same way
    def stream_error(*args, **kwargs):
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(torch, "save", stream_error)
    monkeypatch.setattr(ckpt, "save_file", real)
    with pytest.raises(ckpt.CheckpointError, match=r"step_00000011: basic_ios::clear: iostream error \(\d+ MiB free"):
        ckpt.save_checkpoint(run / "checkpoints", 11, {"m": nn.Linear(2, 2)}, {"step": 11})
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000010"]


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    """Weights become inf at step 15: the step-20 checkpoint is refused, the step-10 one survives
    (keep_last=1 would otherwise have rotated it away) and no export is written."""
    run = tmp_path / "run"
    with pytest.raises(NonFiniteWeightsError, match=r"checkpoint .*step_00000020: tensor 'task.net.weight' has 1 "
                                                    r"non-finite") as e:
        _fit(run, task=Task(poison_at=15), max_steps=30, keep_last=1)
    _one_line(e)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000010"]
    assert not (run / "export").exists()
    weights = load_file(str(run / "checkpoints" / "step_00000010" / ckpt.WEIGHTS))
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_checkpoint_without_checksums_still_loads(tmp_path, caplog):
    path = ckpt.save_checkpoint(tmp_path, 1, {"m": nn.Linear(4, 2)}, {"step": 1})
    meta = json.loads((path / ckpt.META).read_text())
    meta["files"] = {k: v["size"] for k, v in meta["files"].items()}
    (path / ckpt.META).write_text(json.dumps(meta))
    with caplog.at_level(logging.INFO, logger="musicdiff"):
        assert ckpt.latest_verified_checkpoint(tmp_path) == path
    assert "without checksums" in caplog.text
    assert ckpt.load_checkpoint(path, {"m": nn.Linear(4, 2)}, verify=True)["step"] == 1


@pytest.mark.parametrize(("key", "value"), [("max_steps", -5), ("max_steps", 0), ("max_steps", "abc"),
                                            ("max_steps", 2.5), ("batch_size", 0), ("log_every", 0),
                                            ("keep_last", -1), ("checkpoint_every", -1), ("grad_clip", math.nan),
                                            ("max_consecutive_skips", 0), ("resume", "")])
def test_trainer_rejects_bad_numbers_at_construction(key, value):
    with pytest.raises(ValueError, match=rf"^trainer\.{key} must be") as e:
        Trainer(**{key: value})
    _one_line(e)
