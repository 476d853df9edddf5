"""``musicdiff-train init_from=...``: fine-tuning starts from the pretrained weights, freezes what is
asked, and resumes after kill -9 on the same trajectory."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from musicdiff.pretrained import load_pretrained, write_export
from tests.conftest import compose_root

PARTS = ("autoencoder", "dit", "conditioner")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny 'pretrained' export (seeded random weights; what matters is that they are not the init)."""
    root = tmp_path_factory.mktemp("finetune")
    cfg = compose_root("train", ["experiment=tiny", "logger=none", f"paths.output_dir={root / 'x'}"])
    torch.manual_seed(123)
    modules = {g: instantiate(cfg[g]).eval() for g in PARTS}
    return root, write_export(root / "base", modules, cfg), modules


def _train(root, run, *extra):
    from musicdiff.cli.train import train

    cfg = compose_root("train", ["experiment=tiny", "logger=none", "dataset.num_items=8", "trainer.batch_size=2",
                                 "task.demo_prompts=[]", "trainer.progress=false", f"paths.log_dir={root / 'outputs'}",
                                 f"paths.output_dir={run}", *extra])
    train(cfg)
    return cfg


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_starts_at_the_pretrained_weights(base):
    """With lr 0 the fine-tuned export is the pretrained model, bit for bit (the EMA starts there too)."""
    root, export, modules = base
    run = root / "lr0"
    _train(root, run, f"init_from={export}", "optim.lr=0.0", "trainer.max_steps=2")
    for name in PARTS:
        assert _same(load_file(str(run / "export" / f"{name}.safetensors")), modules[name].state_dict()), name
    # the run records the real source (absolute) and the export is self-contained
    assert str(export) in (run / "config.yaml").read_text()
    assert load_pretrained(run / "export").kind == "export"


def test_freeze_switches_keep_parts_fixed(base):
    root, export, modules = base
    run = root / "frozen"
    _train(root, run, f"init_from={export}", "trainer.max_steps=3", "optim.lr=1e-2", "task.ema_beta=0.0",
           "task.freeze=[conditioner]")
    cond = load_file(str(run / "export" / "conditioner.safetensors"))
    dit = load_file(str(run / "export" / "dit.safetensors"))
    assert _same(cond, modules["conditioner"].state_dict())
    assert not _same(dit, modules["dit"].state_dict())
    from musicdiff.cli.train import train

    with pytest.raises(Exception, match="no submodule 'ditt'"):
        train(compose_root("train", ["experiment=tiny", "logger=none", f"paths.output_dir={root / 'bad'}",
                                     f"init_from={export}", "task.freeze=[ditt]"]))


def test_architecture_comes_from_the_source(base):
    """A run configured with another DiT size still fine-tunes the source's architecture."""
    root, export, modules = base
    run = root / "small"
    cfg = _train(root, run, f"init_from={export}", "dit=small", "trainer.max_steps=1", "optim.lr=0.0")
    tiny = compose_root("train", ["experiment=tiny", f"paths.output_dir={root / 'x'}"])
    assert cfg.dit.width == tiny.dit.width and cfg.dit.depth == tiny.dit.depth
    assert _same(load_file(str(run / "export" / "dit.safetensors")), modules["dit"].state_dict())


@pytest.mark.slow
def test_finetune_resumes_after_kill_9(base, tmp_path):
    """kill -9 a fine-tuning run after its first checkpoint; resume=auto ends where an uninterrupted run ends."""
    root, export, _ = base
    common = ["experiment=tiny", "logger=none", "dataset.num_items=8", "trainer.batch_size=2", "task.demo_prompts=[]",
              "trainer.progress=false", "trainer.log_every=1", "trainer.checkpoint_every=2", "trainer.max_steps=6",
              f"init_from={export}", f"paths.log_dir={root / 'outputs'}"]
    env = {"OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1", **{k: v for k, v in __import__("os").environ.items()}}
    ref = tmp_path / "ref"
    subprocess.run([sys.executable, "-m", "musicdiff.train", *common, f"hydra.run.dir={ref}"], env=env, check=True,
                   capture_output=True, timeout=300)
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "musicdiff.train", *common, f"hydra.run.dir={run}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (run / "checkpoints" / "step_00000002" / "COMPLETE").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (run / "export").exists()
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    for name in ("dit", "conditioner"):
        a, b = load_file(str(run / "export" / f"{name}.safetensors")), load_file(str(ref / "export" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name


@pytest.mark.slow
def test_finetune_under_deepspeed_zero3_loads_before_sharding(base, tmp_path):
    """Two CPU processes, ZeRO-3 (every weight partitioned): with lr 0 the export gathered from the
    shards is the pretrained model, so the weights were in place before DeepSpeed partitioned them."""
    from tests.training.test_distributed import _env, _launch, _run

    root, export, modules = base
    run = tmp_path / "zero3"
    _run([*_launch(2), "-m", "musicdiff.train", "experiment=tiny", "logger=none", "dataset.num_items=8",
          "trainer.batch_size=2", "task.demo_prompts=[]", "trainer.progress=false", "trainer.max_steps=2",
          "trainer=deepspeed_zero3", "trainer.cpu=true", "trainer.precision=fp32", "optim.lr=0.0",
          f"init_from={export}", f"paths.log_dir={root / 'outputs'}", f"hydra.run.dir={run}"], env=_env())
    for name in ("dit", "conditioner"):
        got = load_file(str(run / "export" / f"{name}.safetensors"))
        want = modules[name].state_dict()
        assert got.keys() == want.keys() and all(torch.allclose(got[k], want[k], atol=1e-7) for k in got), name
