"""The sbatch scripts without a cluster: syntax, and a real run through stub srun/scontrol/scancel.

The stubs run the per-node command locally (node 0) and record a requeue, so the test follows what
SLURM would do: the batch shell gets USR1 before the time limit, the trainers checkpoint and stop,
the job is requeued, and the requeued job resumes from the checkpoint and finishes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from musicdiff.config.paths import config_dir
from musicdiff.training import checkpoint as ckpt

REPO = Path(config_dir()).parent
SCRIPTS = sorted((REPO / "slurm").glob("*.sbatch")) + [REPO / "slurm" / "common.sh"]

STUBS = {
    # srun: drop its options, run the task command as node 0; its pid is the step's process
    "srun": '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\necho $$ > "$STUB_DIR/step.pid"\n'
            'export SLURM_NODEID=0\nexec "$@"\n',
    "scancel": '#!/bin/bash\nsig=${1#--signal=}\nkill -"$sig" "$(cat "$STUB_DIR/step.pid")"\n',
    "scontrol": '#!/bin/bash\nif [ "$1" = show ]; then echo localhost; else echo "$*" >> "$STUB_DIR/scontrol.log"; fi\n',
}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-x", str(script)], check=True, cwd=REPO)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _last_step(run: Path) -> int:
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return max(steps, default=0)


@pytest.mark.slow
def test_single_node_script_checkpoints_requeues_and_resumes(tmp_path):
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in STUBS.items():
        (stubs / name).write_text(body)
        (stubs / name).chmod(0o755)
    run = tmp_path / "run"
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "STUB_DIR": str(stubs), "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NAME": "musicdiff", "SLURM_NNODES": "1", "SLURM_JOB_NODELIST": "localhost",
           "SLURM_SUBMIT_DIR": str(REPO), "SLURM_CPUS_PER_TASK": "2", "GPUS_PER_NODE": "2",
           "PY": sys.executable, "RUN_DIR": str(run), "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    overrides = ["experiment=tiny", "logger=none", "dataset.num_items=16", "task.demo_prompts=[]",
                 "trainer.max_steps=40", "trainer.batch_size=2", "trainer.log_every=1", "trainer.checkpoint_every=0",
                 "trainer.num_workers=0", "trainer.progress=false", f"paths.log_dir={tmp_path / 'outputs'}",
                 "run_name='slurm test'"]  # quoting must survive sbatch → srun → bash -c
    cmd = ["bash", str(REPO / "slurm" / "train_single_node.sbatch"), *overrides]
    out = tmp_path / "job.out"
    with open(out, "w") as fh:
        job = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while not ((run / "metrics.jsonl").is_file() and _last_step(run) >= 2):
            assert job.poll() is None and time.time() < deadline, out.read_text()[-5000:]
            time.sleep(0.05)
        job.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@300 does before the time limit
        assert job.wait(timeout=480) == 0, out.read_text()[-5000:]
    finally:
        if job.poll() is None:
            job.kill()
    text = out.read_text()
    stopped = ckpt.latest_checkpoint(run / "checkpoints")
    assert stopped is not None and 2 <= int(stopped.name.split("_")[1]) < 40, text[-5000:]
    assert (stubs / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert not (run / "export").exists()
    assert "--machine_rank \"$SLURM_NODEID\"" in text and "--multi_gpu" in text

    # the requeued job: same job id and run dir, resumes and finishes (no signal this time)
    subprocess.run(cmd, env=env, cwd=tmp_path, check=True, capture_output=True, timeout=480)
    assert (run / "export" / "COMPLETE").is_file()
    assert _last_step(run) == 40
    assert "resumed from" in "".join(p.read_text() for p in run.glob("*.log"))
    assert "run_name: slurm test" in (run / "config.yaml").read_text()


def test_submitit_launcher_multirun_config_without_a_cluster(tmp_path, monkeypatch):
    """`-m hydra/launcher=slurm` composes, the launcher instantiates, and submitit accepts every
    parameter: the sbatch text it would submit asks for the resources and the USR1 warning."""
    import submitit
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from hydra.utils import instantiate

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = GlobalHydra.instance().hydra.compose_config(
                "train", ["hydra/launcher=slurm", "experiment=tiny", "optim.lr=1e-4,3e-4", "hydra.launcher.partition=gpu",
                          f"paths.log_dir={tmp_path}"], run_mode=RunMode.MULTIRUN)
            launcher = instantiate(cfg.hydra.launcher)
    finally:
        GlobalHydra.instance().clear()
    assert type(launcher).__name__ == "SlurmLauncher" and hasattr(launcher, "checkpoint")  # requeue hook

    captured = {}

    class _Job:
        def results(self):
            return ["ok"]

    def map_array(executor, fn, *iterables):
        slurm = executor._executor
        captured.update(fn=fn, n=len(iterables[0]), max_num_timeout=slurm.max_num_timeout,
                        sbatch=slurm._make_submission_file_text("python -u -m submitit.core._submit x", "uid"))
        return [_Job() for _ in iterables[0]]

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "srun").write_text("#!/bin/sh\n")  # submitit only checks that SLURM's tools exist
    (stubs / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{stubs}:{os.environ['PATH']}")
    launcher.setup(hydra_context=None, task_function=lambda c: None, config=cfg)
    assert launcher.launch([["optim.lr=1e-4"], ["optim.lr=3e-4"]], initial_job_idx=0) == ["ok", "ok"]
    assert captured["fn"] is launcher and captured["n"] == 2 and captured["max_num_timeout"] == 20
    # submitit warns with USR2 (SUBMITIT_PREEMPT_SIGNAL); the trainer checkpoints on it, then calls
    # submitit's handler, which requeues the trial
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=1440", "--signal=USR2@300",
                 f"--job-name={cfg.run_name}", "--ntasks-per-node=1", "--mem=64GB"):
        assert f"#SBATCH {line}" in captured["sbatch"], captured["sbatch"]
    assert Path(str(cfg.hydra.sweep.dir)).is_dir()
