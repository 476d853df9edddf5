"""Sweep workers sharing one study: per-worker seeds, one trial budget, heartbeats + retry of a
killed worker's trial, and safe creation of a new sqlite storage by workers starting together.

The workers are real ``python -m musicdiff.sweep`` processes running the cheap ``kind=python``
objective of :mod:`tests.sweeps.objectives` (a quadratic that pauses ``SWEEP_TEST_TRIAL_S``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from musicdiff.sweeps import optuna_sweep
from musicdiff.sweeps.optuna_sweep import load_runner, open_study, worker_seed

REPO = Path(__file__).resolve().parents[2]
N_TRIALS = 6
TIMEOUT = 180


def _study_cfg(db: Path, **extra):
    return OmegaConf.create({"storage": f"sqlite:///{db}", "study_name": "workers", "direction": "minimize",
                             "heartbeat_interval": 1, "grace_period": 2, "max_retries": 2, **extra})


def _open_at(db: str, start: float, out: multiprocessing.Queue) -> None:
    time.sleep(max(0.0, start - time.time()))  # every process opens the new storage at the same moment
    try:
        open_study(_study_cfg(Path(db)))
        out.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out.put(f"{type(exc).__name__}: {exc}")


def test_workers_create_a_new_sqlite_storage_concurrently(tmp_path):
    """Four processes opening one new sqlite file at once: all succeed, one study (Optuna alone raises
    "table studies already exists" / "database is locked" here)."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    db = tmp_path / "new" / "optuna.db"
    start = time.time() + 1.0
    procs = [ctx.Process(target=_open_at, args=(str(db), start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = [out.get(timeout=5) for _ in procs]
    assert results == ["ok"] * 4, results
    assert [s.study_name for s in optuna.get_all_study_summaries(f"sqlite:///{db}")] == ["workers"]


def test_worker_seeds_differ_between_workers_and_restarts():
    seeds = {worker_seed(0, w, n) for w in ("host-1", "host-2", "slurm-7_0") for n in (0, 6)}
    assert len(seeds) == 6
    assert worker_seed(0, "host-1", 0) == worker_seed(0, "host-1", 0)


def test_python_kind_names_a_bad_objective_fn():
    with pytest.raises(ValueError, match="objective_fn=package.module:function, got 'no_colon'"):
        load_runner("no_colon")
    with pytest.raises(ValueError, match="objective_fn='tests.sweeps.objectives:missing'"):
        load_runner("tests.sweeps.objectives:missing")
    assert load_runner("tests.sweeps.objectives:quadratic").__name__ == "quadratic"


def _worker(tmp_path: Path, name: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "musicdiff.sweep", "kind=python", "objective_fn=tests.sweeps.objectives:quadratic",
           "logger=none", f"storage=sqlite:///{tmp_path / 'optuna.db'}", "study_name=workers",
           f"n_trials={N_TRIALS}", "objective=loss", "base_overrides=[]", "heartbeat_interval=1", "grace_period=2",
           "~search_space", "+search_space={x: {type: float, low: -1.0, high: 1.0}, y: {type: float, low: -1.0, high: 1.0}}",
           f"paths.log_dir={tmp_path}", f"hydra.run.dir={tmp_path / name}"]
    with open(log, "w") as fh:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)


def _events(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


@pytest.mark.slow
def test_two_workers_share_the_budget_and_a_killed_trial_is_retried(tmp_path):
    """Workers a and b start together on a new storage; a is killed -9 inside a trial and restarted.
    The study ends with exactly n_trials COMPLETE trials at distinct points, the killed trial FAIL
    and its retry (same parameters) COMPLETE, nothing left RUNNING."""
    events = tmp_path / "events.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "1",
           "SWEEP_TEST_EVENTS": str(events), "SWEEP_TEST_TRIAL_S": "0.6"}
    env.pop("MUSICDIFF_CONFIG_DIR", None)
    logs = {n: tmp_path / f"{n}.log" for n in ("a", "b", "a2")}
    a = _worker(tmp_path, "a", env, logs["a"])
    b = _worker(tmp_path, "b", env, logs["b"])
    procs = [a, b]
    try:
        deadline = time.time() + TIMEOUT
        killed = None
        while killed is None and time.time() < deadline:  # kill a in the middle of one of its trials
            ev = _events(events)
            ended = {e["trial"] for e in ev if e["event"] == "end"}
            running = [e for e in ev if e["event"] == "start" and e["pid"] == a.pid and e["trial"] not in ended]
            if running:
                a.send_signal(signal.SIGKILL)
                killed = running[0]
            assert a.poll() is None or killed, f"worker a ended early:\n{logs['a'].read_text()[-3000:]}"
            time.sleep(0.05)
        assert killed is not None, "worker a never started a trial"
        assert a.wait(30) == -signal.SIGKILL
        a2 = _worker(tmp_path, "a2", env, logs["a2"])  # the restarted worker resumes the same study
        procs.append(a2)
        for p, name in ((b, "b"), (a2, "a2")):
            assert p.wait(TIMEOUT) == 0, f"worker {name} failed:\n{logs[name].read_text()[-4000:]}"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    study = optuna.load_study(study_name="workers", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    by_state = {s: [t for t in study.trials if t.state == s] for s in TrialState}
    complete, failed = by_state[TrialState.COMPLETE], by_state[TrialState.FAIL]
    assert len(complete) == N_TRIALS, [(t.number, t.state) for t in study.trials]
    assert not by_state[TrialState.RUNNING] and not by_state[TrialState.WAITING]
    killed_number = int(killed["trial"].split("_")[1])
    assert [t.number for t in failed] == [killed_number]
    retries = [t for t in complete if t.system_attrs.get("failed_trial") == killed_number]
    assert len(retries) == 1 and retries[0].params == {"x": killed["x"], "y": killed["y"]}
    points = [(t.params["x"], t.params["y"]) for t in complete]
    assert len(set(points)) == N_TRIALS, f"workers repeated parameter sets: {points}"
    assert all(t.user_attrs["worker"] for t in complete)  # provenance: which worker ran each trial
    assert all(t.user_attrs.get(optuna_sweep.SURPLUS) for t in by_state[TrialState.PRUNED])


def test_threads_of_one_worker_share_the_budget(tmp_path, monkeypatch):
    """n_jobs=2 threads in one process, then a resume with a larger budget: exactly n_trials COMPLETE
    each time, all at distinct points, every trial's runner called once."""
    from musicdiff.tracking import NullLogger

    monkeypatch.setenv("SWEEP_TEST_TRIAL_S", "0.2")
    monkeypatch.setenv("SWEEP_TEST_EVENTS", str(tmp_path / "events.jsonl"))
    space = {"x": {"type": "float", "low": -1.0, "high": 1.0}, "y": {"type": "float", "low": -1.0, "high": 1.0}}
    cfg = _study_cfg(tmp_path / "optuna.db", kind="python", objective_fn="tests.sweeps.objectives:quadratic",
                     n_trials=4, n_jobs=2, seed=0, worker_id="w0", objective="loss", search_space=space,
                     base_overrides=[], eval_overrides=[], logger={"_target_": "musicdiff.tracking.NullLogger"})
    for n_trials in (4, 6):
        cfg.n_trials = n_trials
        study = optuna_sweep.run_sweep(cfg, NullLogger(), tmp_path / "sweep")
        complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
        assert len(complete) == n_trials, [(t.number, t.state) for t in study.trials]
        assert len({(t.params["x"], t.params["y"]) for t in complete}) == n_trials
    starts = [e for e in _events(tmp_path / "events.jsonl") if e["event"] == "start"]
    assert len(starts) == 6 and len({e["trial"] for e in starts}) == 6
