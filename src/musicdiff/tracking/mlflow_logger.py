"""MLflow tracking with a local store under the output dir (no server needed).

A store that cannot be written (a read-only folder or database, a path that is a file) fails at
:meth:`MLflowLogger.start` with one :class:`TrackingError` line naming the store, before any run
is created, instead of MLflow's logged SQL traceback and an unrelated ``AttributeError``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any, Mapping

import soundfile as sf
import torch

from musicdiff.tracking.base import RunLogger
from musicdiff.tracking.plots import save_figure

log = logging.getLogger("musicdiff.tracking")

_MAX_PARAM_LEN = 6000  # MLflow's limit on a param value is 6000 characters
_FIX = "set logger.store_dir=<a writable folder> (or logger.tracking_uri=..., or logger=none)"


class TrackingError(RuntimeError):
    """The tracking store cannot be used (one line naming it)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def check_sqlite_store(uri: str) -> None:
    """Raises :class:`TrackingError` if the SQLite store of ``uri`` (``sqlite:///...``) cannot be written.

    Probes with a write that is rolled back (SQLite reports a read-only file or folder only when
    writing); a database that does not exist yet needs a writable folder.
    """
    target = uri[len("sqlite:///"):]
    as_uri = target.startswith("file:")
    path = Path(target[len("file:"):].split("?")[0]) if as_uri else Path(target)
    if not as_uri and not path.exists():
        try:
            with tempfile.TemporaryFile(dir=path.parent):
                pass
        except OSError as exc:
            raise TrackingError(f"MLflow store {path.parent} is not writable ({exc.strerror}): {_FIX}") from exc
        return
    try:
        con = sqlite3.connect(target, uri=as_uri, isolation_level=None, timeout=60)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("CREATE TABLE main.musicdiff_write_probe (x)")
            con.execute("ROLLBACK")
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise TrackingError(f"MLflow store {path} cannot be written ({_first_line(exc)}): {_FIX}") from exc


class MLflowLogger(RunLogger):
    """Log params, metrics and artifacts (audio WAVs, spectrogram PNGs, configs) to MLflow.

    Args:
        tracking_uri: MLflow store URI (a server, ``databricks``...); default
            ``sqlite:///<store_dir>/mlflow.db``.
        store_dir: directory of the default local store, shared by all runs, so
            ``mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db`` shows every run.
        experiment: MLflow experiment name.
        artifact_location: where artifacts of a newly created experiment go.
        parent_run_id: open this run as a child (sweeps).
        log_system_metrics: let MLflow sample CPU/GPU usage.
    """

    def __init__(self, tracking_uri: str | None = None, store_dir: str = "outputs", experiment: str = "musicdiff",
                 artifact_location: str | None = None, parent_run_id: str | None = None,
                 log_system_metrics: bool = False) -> None:
        self.tracking_uri = tracking_uri
        self.store_dir = store_dir
        self.experiment = experiment
        self.artifact_location = artifact_location
        self.parent_run_id = parent_run_id or os.environ.get("MUSICDIFF_PARENT_RUN_ID") or None
        self.log_system_metrics = log_system_metrics
        self._client = None
        self._run_id: str | None = None

    @property
    def run_id(self) -> str | None:
        return self._run_id

    def start(self, run_dir: Path, params: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> None:
        location = self.artifact_location
        if self.tracking_uri:
            uri = self.tracking_uri
        else:
            store = Path(self.store_dir).resolve()
            try:
                store.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TrackingError(f"MLflow store {store} cannot be created ({exc.strerror}): {_FIX}") from exc
            artifacts = store / "mlartifacts"
            for folder in (store, artifacts):
                if folder.exists() and not os.access(folder, os.W_OK):
                    raise TrackingError(f"MLflow store {folder} is read-only: {_FIX}")
            uri = f"sqlite:///{store / 'mlflow.db'}"
            location = location or artifacts.as_uri()
        if uri.startswith("sqlite:///"):
            check_sqlite_store(uri)
        from mlflow.tracking import MlflowClient

        try:
            self._client = MlflowClient(tracking_uri=uri)
            exp = self._client.get_experiment_by_name(self.experiment)
            if exp is None:
                try:
                    exp_id = self._client.create_experiment(self.experiment, artifact_location=location)
                except Exception:  # noqa: BLE001 - created concurrently by another process (sweeps)
                    exp = self._client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
                    exp_id = exp.experiment_id
            else:
                exp_id = exp.experiment_id
        except Exception as exc:  # noqa: BLE001 - MLflow/SQLAlchemy raise many types
            self._client = None
            raise TrackingError(f"cannot use the MLflow store {uri}: {_first_line(exc)}") from exc
        all_tags = dict(tags or {})
        all_tags["musicdiff.run_dir"] = str(run_dir)
        if self.parent_run_id:
            all_tags["mlflow.parentRunId"] = self.parent_run_id
        run = self._client.create_run(exp_id, tags=all_tags, run_name=all_tags.get("mlflow.runName"))
        self._run_id = run.info.run_id
        from mlflow.entities import Param

        items = [Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._client.log_batch(self._run_id, params=items[i:i + 100])
        log.info("MLflow run %s in %s (experiment %s)", self._run_id, uri, self.experiment)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        if self._client is None:
            return
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        if items:
            self._client.log_batch(self._run_id, metrics=items)

    def log_audio(self, key: str, audio: torch.Tensor, sample_rate: int, step: int) -> None:
        if self._client is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{key.replace('/', '_')}_step{step:08d}.wav"
            data = audio.detach().float().cpu().clamp(-1, 1).T.numpy()
            sf.write(path, data, sample_rate, subtype="PCM_16")
            self._client.log_artifact(self._run_id, str(path), artifact_path="audio")

    def log_figure(self, key: str, figure: Any, step: int) -> None:
        if self._client is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{key.replace('/', '_')}_step{step:08d}.png"
            save_figure(figure, path)
            self._client.log_artifact(self._run_id, str(path), artifact_path="figures")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self._client is None:
            return
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self._run_id, str(path), artifact_path=artifact_path)
        else:
            self._client.log_artifact(self._run_id, str(path), artifact_path=artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if self._client is None:
            return
        for k, v in tags.items():
            self._client.set_tag(self._run_id, k, str(v))

    def finish(self, status: str = "FINISHED") -> None:
        if self._client is None:
            return
        self._client.set_terminated(self._run_id, status=status)
        self._client = None
