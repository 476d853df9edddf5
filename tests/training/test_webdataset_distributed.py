"""dataset=webdataset_latents through the real CLI on 2 gloo processes x 2 DataLoader workers.

Uneven latent shards (24 samples in shards of 5, 7, 3 and 9; global batch 4: 6 steps an epoch);
a wrapper records which samples every rank trains on at every step. The run is killed with
SIGKILL after its step-3 checkpoint, in the middle of epoch 1, and resumed with resume=auto: each
epoch must train every sample exactly once across the 2 x 2 readers, the two epochs in different
orders, and the steps replayed after the kill must draw exactly the samples the killed run drew
(nothing in flight at the kill is lost or trained twice: the bound is 0 samples relative to the
checkpoint resumed from).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import psutil
import pytest

from musicdiff.data.webdataset_io import encode_npy, write_tar
from tests.training.test_distributed import _env, _launch, _run, _wait_for_step

pytestmark = pytest.mark.slow

SHARDS = (5, 7, 3, 9)  # 24 samples
STEPS = 12  # two epochs of 6 global batches of 4

WRAPPER = textwrap.dedent('''
    import json, os, time
    from musicdiff.training.tasks.diffusion import DiffusionTask

    real_step, real_end = DiffusionTask.training_step, DiffusionTask.on_step_end
    log = os.environ["BATCH_LOG"] + "." + os.environ.get("RANK", "0")

    def training_step(self, batch, step, ctx):
        with open(log, "a") as fh:
            fh.write(json.dumps({"tag": os.environ["RUN_TAG"], "step": step,
                                 "paths": [m["path"] for m in batch["metadata"]]}) + "\\n")
        return real_step(self, batch, step, ctx)

    def on_step_end(self, step):
        real_end(self, step)
        time.sleep(float(os.environ.get("STEP_PAUSE_S", "0")))

    DiffusionTask.training_step, DiffusionTask.on_step_end = training_step, on_step_end
    from musicdiff.cli.train import main
    main()
''')


def _shards(root: Path) -> Path:
    rng, k = np.random.default_rng(0), 0
    for s, n in enumerate(SHARDS):
        samples = []
        for _ in range(n):
            meta = {"path": f"song{k:02d}.wav", "seconds_start": 0.0, "seconds_total": 3.0,
                    "metadata": {"caption": f"song {k}"}}
            samples.append({"__key__": f"{k:06d}", "latents.npy": encode_npy(rng.standard_normal((16, 300)).astype(
                np.float32)), "json": json.dumps(meta).encode()})
            k += 1
        write_tar(root / f"train-{s:06d}.tar", samples)
    return root


def _records(log: Path, tag: str | None = None) -> dict[tuple[int, int], list[str]]:
    """(step, rank) -> paths of the micro-batch; a replayed step keeps the last record."""
    out: dict[tuple[int, int], list[str]] = {}
    for rank in (0, 1):
        path = Path(f"{log}.{rank}")
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by kill -9
                continue
            if tag is None or rec["tag"] == tag:
                out[(rec["step"], rank)] = rec["paths"]
    return out


def test_two_processes_two_workers_exactly_once_per_epoch_and_exact_resume_after_kill_9(tmp_path):
    shards = _shards(tmp_path)
    run, log = tmp_path / "run", tmp_path / "batches"
    wrapper = tmp_path / "train_logged.py"
    wrapper.write_text(WRAPPER)
    cmd = [*_launch(2), str(wrapper), "experiment=tiny", "logger=none", "dataset=webdataset_latents",
           f"dataset.urls='{shards}/train-{{000000..000003}}.tar'", "dataset.shuffle_buffer=5",
           "dataset.window_seconds=1.0", "task.demo_prompts=[]", f"trainer.max_steps={STEPS}",
           "trainer.batch_size=2", "trainer.num_workers=2", "trainer.log_every=1", "trainer.checkpoint_every=3",
           "trainer.progress=false", f"paths.log_dir={tmp_path}", f"hydra.run.dir={run}"]
    out = tmp_path / "killed.out"
    with open(out, "w") as fh:
        proc = subprocess.Popen(cmd, env=_env(BATCH_LOG=str(log), RUN_TAG="killed", STEP_PAUSE_S="0.5"), stdout=fh,
                                stderr=subprocess.STDOUT)
    try:
        _wait_for_step(run, 4, proc, out)
    finally:  # kill -9 the launcher, both trainers and their DataLoader workers at once (a node dying)
        tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=60)
    killed = _records(log, "killed")
    killed_at = max(step for step, _ in killed)
    assert 3 <= killed_at < 6, f"killed at step {killed_at}: not mid-epoch after the step-3 checkpoint"

    done = _run(cmd, env=_env(BATCH_LOG=str(log), RUN_TAG="resumed"))
    assert "resumed from" in "".join(p.read_text() for p in run.glob("*.log")), done.stderr[-3000:]
    resumed = _records(log, "resumed")
    assert resumed and min(step for step, _ in resumed) == 3, done.stderr[-3000:]  # continues at the checkpoint
    for (step, rank), paths in killed.items():  # replayed steps: the very same samples
        if step >= 3:
            assert resumed[(step, rank)] == paths, (step, rank)

    final = _records(log)
    assert sorted({step for step, _ in final}) == list(range(STEPS))
    epochs = []
    for epoch in range(2):
        seen = Counter(p for (step, _), paths in final.items() if step // 6 == epoch for p in paths)
        assert sorted(seen) == [f"song{k:02d}.wav" for k in range(24)] and set(seen.values()) == {1}, seen
        order = defaultdict(list)
        for (step, rank), paths in sorted(final.items()):
            if step // 6 == epoch:
                order[rank] += paths
        epochs.append(dict(order))
    assert epochs[0] != epochs[1]  # shard order and shuffle buffers are seeded per epoch
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()
               and line.startswith("{") and line.endswith("}")]
    assert max(m["step"] for m in metrics) == STEPS


def test_encode_array_script_encodes_its_part_into_latent_shards(tmp_path):
    """slurm/encode_array.sbatch as array task 1: encodes the 2nd subfolder (sorted) into OUT/part_001
    as WebDataset latent shards that dataset=webdataset_latents reads through the directory name."""
    from musicdiff.config.paths import config_dir
    from musicdiff.data.synthetic import generate_synthetic_dataset
    from musicdiff.data.webdataset import WebDatasetShards

    corpus, out = tmp_path / "corpus", tmp_path / "latents"
    for name, n in (("a_part", 2), ("b_part", 3)):
        generate_synthetic_dataset(corpus / name, n, 16000, 0.5, seed=len(name) + n, channels=2)
    script = Path(config_dir()).parent / "slurm" / "encode_array.sbatch"
    env = _env(CORPUS=str(corpus), OUT=str(out), SLURM_ARRAY_TASK_ID="1", SLURM_CPUS_PER_TASK="1",
               PY=sys.executable)
    _run(["bash", str(script), "allow_random_init=true", "autoencoder=tiny", "shard_size=2", "device=cpu"], env=env)
    assert sorted(p.name for p in (out / "part_001").glob("*.tar")) == ["shard_00000.tar", "shard_00001.tar"]
    assert not (out / "part_000").exists()
    ds = WebDatasetShards(str(out / "part_001"), "latents", 16000, 2, 0.25, downsampling_ratio=64, latent_dim=16,
                          shuffle_buffer=0)
    items = list(ds)
    assert len(items) == 3 and all(it["latents"].shape == (16, 63) for it in items)
    assert len({it["path"] for it in items}) == 3 and all(it["prompt"] for it in items)
    bad = _run(["bash", str(script)], env={**env, "SLURM_ARRAY_TASK_ID": "5"}, expect_rc=1)
    assert "has only 2 subfolders" in bad.stderr
