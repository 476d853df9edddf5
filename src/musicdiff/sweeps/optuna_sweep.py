"""Optuna sweeps driven through Hydra composition, one MLflow child run per trial.

Each trial composes the target entry point's config (``generate`` then ``evaluate``, or
``train``) with the base overrides plus the sampled ones, runs it in-process, and reports the
objective metric. The study lives in an RDB storage (sqlite by default), so an interrupted sweep
resumes where it stopped and several workers (threads here, or processes/SLURM array tasks
sharing the storage) run trials in parallel:

* every worker seeds its TPE sampler from (``seed``, its identity, the number of trials already
  in the study), so parallel and resumed workers explore different points;
* ``n_trials`` is one budget shared by all workers: a worker starts a trial only while fewer than
  ``n_trials`` trials are finished (complete or pruned) or running, and a trial that lost a race
  for the last slot is pruned unrun and marked ``budget_surplus`` (not counted);
* running trials send heartbeats; a trial whose worker died (kill -9, node failure) is marked FAIL
  after ``grace_period`` by the next worker that looks, and re-queued with the same parameters
  (Optuna's ``RetryHeartbeatStaleTrialCallback``), up to ``max_retries`` times; workers stay until
  every trial of the budget has finished, so a survivor runs the retry;
* the first workers on a new sqlite file create its tables under a file lock (Optuna's table
  creation is not safe against a concurrent creator); server databases are retried instead.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import math
import os
import socket
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optuna
from filelock import FileLock
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from musicdiff.config.paths import config_dir
from musicdiff.sweeps.space import suggest, to_overrides
from musicdiff.tracking.base import RunLogger

log = logging.getLogger("musicdiff.sweep")
_COMPOSE_LOCK = threading.Lock()  # Hydra's global state is not thread-safe
SURPLUS = "budget_surplus"  # user attr of a trial pruned unrun because other workers filled the budget
MONITORED = "heartbeat"  # user attr of a trial whose worker sends heartbeats (a dead one gets failed)
Runner = Callable[[Path, Sequence[str], Sequence[str]], Mapping[str, float]]


def compose_config(name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with overrides outside of a Hydra app."""
    with _COMPOSE_LOCK:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides))


def run_generate_eval(trial_dir: Path, overrides: Sequence[str], eval_overrides: Sequence[str]) -> dict[str, float]:
    """Generate with the trial's overrides, then evaluate the generated folder."""
    from musicdiff.cli.evaluate import evaluate
    from musicdiff.cli.generate import generate

    gen_cfg = compose_config("generate", [*overrides, "logger=none", f"paths.output_dir={trial_dir / 'generate'}"])
    paths = generate(gen_cfg)
    ev_cfg = compose_config("evaluate", [*eval_overrides, "logger=none", f"generated_dir={paths[0].parent}",
                                         f"paths.output_dir={trial_dir / 'evaluate'}"])
    return evaluate(ev_cfg)


def run_train(trial_dir: Path, overrides: Sequence[str], eval_overrides: Sequence[str]) -> dict[str, float]:  # noqa: ARG001
    """Train with the trial's overrides; the objective is a final training metric."""
    from musicdiff.cli.train import train

    cfg = compose_config("train", [*overrides, "logger=none", f"paths.output_dir={trial_dir}"])
    return train(cfg)


RUNNERS: dict[str, Runner] = {
    "generate_eval": run_generate_eval,
    "train": run_train,
}


def load_runner(spec: str | None) -> Runner:
    """The user runner of ``kind=python``: ``objective_fn=package.module:function``.

    The function gets the same arguments as the built-in runners (trial dir, the trial's
    overrides ``key=value``, ``eval_overrides``) and returns a dict of metrics.

    Raises:
        ValueError: naming ``objective_fn`` when it is missing, malformed or not importable.
    """
    module, _, name = (spec or "").partition(":")
    if not module or not name:
        raise ValueError(f"kind=python needs objective_fn=package.module:function, got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"objective_fn={spec!r}: {type(exc).__name__}: {exc}") from exc
    if not callable(fn):
        raise ValueError(f"objective_fn={spec!r} is not callable")
    return fn


def worker_identity(worker_id: Any = None) -> str:
    """This worker's name: ``worker_id`` if set, else the SLURM array task, else host and pid."""
    if worker_id is not None:
        return str(worker_id)
    if "SLURM_ARRAY_TASK_ID" in os.environ:
        return f"slurm-{os.environ.get('SLURM_ARRAY_JOB_ID', '')}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return f"{socket.gethostname()}-{os.getpid()}"


def worker_seed(seed: int, identity: str, n_existing: int) -> int:
    """TPE seed of one worker: differs between workers and between restarts of one worker."""
    digest = hashlib.sha256(f"{seed}/{identity}/{n_existing}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def open_study(cfg: DictConfig) -> optuna.Study:
    """Create or load the study in ``cfg.storage``, safe when several workers start on a new storage.

    Heartbeats (``heartbeat_interval`` seconds, null: off) let the next worker fail and re-queue a
    trial whose worker died.
    """
    url = str(cfg.storage)
    hb = cfg.get("heartbeat_interval")
    kwargs: dict[str, Any] = {}
    if hb:
        kwargs = {"heartbeat_interval": int(hb), "grace_period": cfg.get("grace_period") or None}

    def create() -> optuna.Study:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if hb:
                kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=cfg.get("max_retries"))
            storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        return optuna.create_study(study_name=cfg.study_name, storage=storage, direction=cfg.direction,
                                   load_if_exists=True)

    engine_kwargs: dict[str, Any] = {}
    db = url[len("sqlite:///"):] if url.startswith("sqlite:///") else None
    if db is not None and db not in ("", ":memory:"):
        Path(db).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 120}}  # wait for other workers' writes
        with FileLock(db + ".lock", timeout=300):
            return create()
    for attempt in range(6):  # server RDBs: a concurrent creator makes the loser fail once
        try:
            return create()
        except Exception as exc:  # noqa: BLE001 - sqlalchemy errors differ per backend
            if attempt == 5:
                raise
            log.warning("opening study storage failed (%s: %s), retrying", type(exc).__name__, exc)
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def _counts(study: optuna.Study) -> tuple[int, int, int, int]:
    """(finished trials counted in the budget, running, monitored running, waiting)."""
    used = running = monitored = waiting = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not t.user_attrs.get(SURPLUS):
            used += 1
        elif t.state == TrialState.RUNNING:
            running += 1
            monitored += bool(t.user_attrs.get(MONITORED))
        elif t.state == TrialState.WAITING:
            waiting += 1
    return used, running, monitored, waiting


def _surplus(study: optuna.Study, number: int, n_trials: int) -> bool:
    """True if trials finished, or started before trial ``number``, already fill the budget.

    Workers check the budget before starting a trial, but two may see the last free slot at once;
    ordering by trial number makes exactly one of them run it, without a lock.
    """
    used = ahead = 0
    for t in study.get_trials(deepcopy=False):
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not t.user_attrs.get(SURPLUS):
            used += 1
        elif t.number < number and t.state in (TrialState.RUNNING, TrialState.WAITING):
            ahead += 1
    return used + ahead >= n_trials


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def run_sweep(cfg: DictConfig, logger: RunLogger, sweep_dir: Path) -> optuna.Study:
    """Run (or resume, or join as one more worker) the study described by a composed ``conf/sweep.yaml``.

    Returns:
        The Optuna study (``study.best_trial`` holds the best overrides).
    """
    if cfg.kind == "python":
        runner = load_runner(cfg.get("objective_fn"))
    elif cfg.kind in RUNNERS:
        runner = RUNNERS[cfg.kind]
    else:
        raise ValueError(f"sweep kind must be one of {sorted([*RUNNERS, 'python'])}, got {cfg.kind!r}")
    n_trials, n_jobs = int(cfg.n_trials), int(cfg.n_jobs)
    if n_trials < 0 or n_jobs < 1:
        raise ValueError(f"n_trials must be >= 0 and n_jobs >= 1, got n_trials={n_trials}, n_jobs={n_jobs}")
    space: Mapping[str, Any] = OmegaConf.to_container(cfg.search_space, resolve=True)  # type: ignore[assignment]
    study = open_study(cfg)
    identity = worker_identity(cfg.get("worker_id"))
    seed = worker_seed(int(cfg.seed), identity, len(study.get_trials(deepcopy=False)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant liar: running trials count as bad points, so parallel workers do not crowd one spot
        study.sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    log.info("sweep worker %s: TPE seed %d", identity, seed)
    heartbeat = cfg.get("heartbeat_interval")
    logger_factory = _child_logger_factory(cfg, logger)
    base = list(cfg.base_overrides)
    # the metrics option first, so an explicit metrics=... in eval_overrides still wins
    eval_base = [*([f"metrics={cfg.eval_metrics}"] if cfg.get("eval_metrics") else []), *cfg.eval_overrides]

    def objective(trial: optuna.Trial) -> float:
        if _surplus(study, trial.number, n_trials):
            trial.set_user_attr(SURPLUS, True)
            raise optuna.TrialPruned("the trial budget was filled by other workers")
        trial.set_user_attr("worker", identity)
        if heartbeat:
            trial.set_user_attr(MONITORED, True)
        params = suggest(trial, space)
        trial_dir = sweep_dir / f"trial_{trial.number:04d}"
        child = logger_factory()
        child.start(trial_dir, {**params, "trial": trial.number}, tags={"mlflow.runName": f"trial_{trial.number}"})
        try:
            metrics = runner(trial_dir, [*base, *to_overrides(params)], eval_base)
        except Exception:
            child.finish("FAILED")
            raise
        value = float(metrics.get(cfg.objective, math.nan))
        child.log_metrics({k: float(v) for k, v in metrics.items()}, step=trial.number)
        child.finish("FINISHED")
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"objective {cfg.objective!r} missing or not finite in {sorted(metrics)}")
        return value

    max_failures = int(cfg.get("max_consecutive_failures") or 0)

    def work() -> None:
        """One worker thread: run trials until the shared budget is finished."""
        failures = 0
        states: list[TrialState] = []
        while True:
            if heartbeat:
                _fail_stale(study)  # a dead worker's trial becomes FAIL and is queued again
            used, running, monitored, waiting = _counts(study)
            if used >= n_trials:
                return
            if used + running >= n_trials and not waiting:
                if not monitored:  # the rest runs elsewhere (unmonitored: nothing to wait for)
                    if running:
                        log.info("worker %s: %d finished + %d running trials fill the budget of %d; trials "
                                 "left RUNNING by a dead worker without heartbeats keep their slot (mark them "
                                 "failed, e.g. with optuna's storage API, to re-run them)", identity, used,
                                 running, n_trials)
                    return
                time.sleep(float(heartbeat))  # wait: a running trial may die and come back as a retry
                continue
            study.optimize(objective, n_trials=1, catch=(RuntimeError, ValueError),
                           callbacks=[lambda _s, t: states.append(t.state)])
            failures = failures + 1 if states and states[-1] == TrialState.FAIL else 0
            if max_failures and failures >= max_failures:
                log.error("worker %s: %d trials failed in a row; stopping (see the errors above)", identity, failures)
                return

    used, running, _, _ = _counts(study)
    log.info("study %r: %d of %d trials finished, %d running", cfg.study_name, used, n_trials, running)
    if n_jobs == 1:
        work()
    else:
        with ThreadPoolExecutor(n_jobs) as pool:
            for future in [pool.submit(work) for _ in range(n_jobs)]:
                future.result()
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if done:
        best = study.best_trial
        logger.log_metrics({f"best/{cfg.objective}": best.value}, step=len(study.trials))
        logger.set_tags({f"best.{k}": str(v) for k, v in best.params.items()})
        log.info("best trial %d: %s = %.5g with %s", best.number, cfg.objective, best.value, best.params)
    return study


def _child_logger_factory(cfg: DictConfig, parent: RunLogger) -> Callable[[], RunLogger]:
    from hydra.utils import instantiate

    def make() -> RunLogger:
        node = OmegaConf.to_container(cfg.logger, resolve=True)
        if isinstance(node, dict) and "parent_run_id" in node:
            node["parent_run_id"] = parent.run_id
        return instantiate(node)

    return make
