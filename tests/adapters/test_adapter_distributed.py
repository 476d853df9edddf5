"""Adapter fine-tuning scales out like full training (issue 12 §3): through the real CLI, a LoRA run on
2 gloo processes (DDP-style all-reduce), killed with kill -9 on every rank mid-run and resumed, and a
DeepSpeed ZeRO-2 run, give the per-step losses and the exported adapter of one process accumulating the
same global batch (harness of tests/training/test_distributed.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.training.test_distributed import (
    WRAPPER,
    _env,
    _launch,
    _losses,
    _need_deepspeed,
    _run,
    _wait_for_step,
)

pytestmark = pytest.mark.slow

STEPS = 6


def _overrides(base_export, root, run, *extra):
    return ["experiment=tiny", "logger=none", "dataset.num_items=16", "task.demo_prompts=[]",
            f"trainer.max_steps={STEPS}", "trainer.batch_size=2", "trainer.log_every=1", "trainer.checkpoint_every=3",
            "trainer.num_workers=0", "trainer.progress=false", "adapter=lora", "adapter.rank=4",
            f"init_from={base_export}", f"paths.log_dir={root}", f"hydra.run.dir={run}", *extra]


def _assert_same(run, ref_run, rtol: float = 1e-4) -> None:
    got, ref = _losses(run), _losses(ref_run)
    assert sorted(got) == list(range(1, STEPS + 1)), sorted(got)
    for step, loss in ref.items():
        assert got[step] == pytest.approx(loss, rel=rtol), f"step {step}: {got[step]} vs {loss}"
    assert sorted(p.name for p in (run / "export").iterdir()) == ["adapter.safetensors"]
    a = load_file(str(run / "export" / "adapter.safetensors"))
    b = load_file(str(ref_run / "export" / "adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert any(b[k].abs().max() > 0 for k in b if k.endswith("lora_B"))  # trained


def test_lora_ddp_kill_9_resume_and_zero2_match_one_process(base_export, tmp_path):
    root = tmp_path
    ref_run = root / "reference"
    _run([sys.executable, "-m", "musicdiff.train", *_overrides(base_export, root, ref_run, "trainer.grad_accum=2")])

    # 2 processes, every rank killed with SIGKILL after the step-3 checkpoint, then resumed
    run = root / "ddp"
    wrapper = tmp_path / "faulty_train.py"
    wrapper.write_text(WRAPPER)
    cmd = [*_launch(2), str(wrapper), *_overrides(base_export, root, run)]
    out = tmp_path / "ddp.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen(cmd, env=_env(STEP_PAUSE_S="0.5"), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_for_step(run, 4, proc, out)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert not (run / "export").exists()
    _run([*_launch(2), "-m", "musicdiff.train", *_overrides(base_export, root, run)])
    assert "resumed from" in "".join(p.read_text() for p in run.glob("*.log"))
    _assert_same(run, ref_run)

    # DeepSpeed ZeRO-2 on 2 CPU processes: only the adapter is in the optimiser and its shards
    _need_deepspeed()
    zero2 = root / "zero2"
    _run([*_launch(2), "-m", "musicdiff.train", *_overrides(base_export, root, zero2, "trainer=deepspeed_zero2",
                                                               "trainer.cpu=true", "trainer.precision=fp32")])
    _assert_same(zero2, ref_run)
