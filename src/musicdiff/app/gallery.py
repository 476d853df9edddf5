"""Browse a local MLflow store: runs of generate, sweep trials, memorization and training, with their audio.

Runs are read with :class:`mlflow.tracking.MlflowClient` from the store the entry points log to
(:mod:`musicdiff.tracking.mlflow_logger`: ``sqlite:///outputs/mlflow.db`` by default). Audio
artifacts (``audio/*.wav`` of ``log_audio``, the clips inside ``memorization/`` reports ...) are
found by suffix and copied once into a local cache the page serves from. The store is only read: a
missing store is reported, never created.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("musicdiff")

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg")
MAX_DEPTH = 4  # artifact folders searched below a run's root
MAX_CLIPS = 64  # audio files listed per run
MAX_PARAMS = 40  # parameter rows shown per run


class StoreError(RuntimeError):
    """The MLflow store cannot be read (one line for the page)."""


@dataclass
class RunInfo:
    """One MLflow run, as listed in the gallery."""

    run_id: str
    name: str
    entry_point: str
    status: str
    started: str
    parent: str
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The dropdown label: name, entry point and a short id (unique)."""
        return f"{self.name} · {self.entry_point} · {self.run_id[:8]}"


class RunStore:
    """Read-only view of an MLflow store and a cache of its audio artifacts.

    Args:
        tracking_uri: the store (``sqlite:///outputs/mlflow.db``, a folder, a server URL).
        cache_dir: where downloaded audio artifacts are kept (per run id).
        max_runs: most recent runs listed.
    """

    def __init__(self, tracking_uri: str, cache_dir: str | Path, max_runs: int = 200) -> None:
        self.tracking_uri = tracking_uri
        self.cache_dir = Path(cache_dir)
        self.max_runs = int(max_runs)
        self._runs: dict[str, RunInfo] = {}

    def _client(self):
        from mlflow.tracking import MlflowClient

        if self.tracking_uri.startswith("sqlite:///"):
            db = Path(self.tracking_uri[len("sqlite:///"):])
            if not db.is_file():
                raise StoreError(f"no MLflow store at {db} (run musicdiff-generate, a sweep or "
                                 f"musicdiff-memorization first, or set tracking_uri=...)")
        return MlflowClient(tracking_uri=self.tracking_uri)

    def runs(self) -> list[RunInfo]:
        """The most recent runs of every experiment, newest first."""
        try:
            client = self._client()
            experiments = [e.experiment_id for e in client.search_experiments()]
            found = client.search_runs(experiments, max_results=self.max_runs,
                                       order_by=["attributes.start_time DESC"]) if experiments else []
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - MLflow/SQLAlchemy raise many types
            raise StoreError(f"cannot read the MLflow store {self.tracking_uri}: {str(exc).splitlines()[0][:300]}") \
                from exc
        names = {r.info.run_id: r.info.run_name or r.info.run_id[:8] for r in found}
        out = []
        for r in found:
            tags = r.data.tags
            parent = tags.get("mlflow.parentRunId", "")
            out.append(RunInfo(
                run_id=r.info.run_id, name=r.info.run_name or r.info.run_id[:8],
                entry_point=tags.get("musicdiff.entry_point", "sweep trial" if parent else "?"),
                status=r.info.status,
                started=time.strftime("%Y-%m-%d %H:%M", time.localtime((r.info.start_time or 0) / 1000)),
                parent=names.get(parent, parent[:8]), metrics=dict(r.data.metrics), params=dict(r.data.params)))
        self._runs = {r.run_id: r for r in out}
        return out

    def run(self, run_id: str) -> RunInfo:
        if run_id not in self._runs:
            self.runs()
        if run_id not in self._runs:
            raise StoreError(f"run {run_id} is not in the MLflow store {self.tracking_uri}")
        return self._runs[run_id]

    def audio(self, run_id: str) -> list[Path]:
        """Local copies of the run's audio artifacts (downloaded once), sorted by artifact path."""
        client = self._client()
        found: list[str] = []

        def walk(path: str | None, depth: int) -> None:
            for item in client.list_artifacts(run_id, path):
                if len(found) >= MAX_CLIPS:
                    return
                if item.is_dir and depth < MAX_DEPTH:
                    walk(item.path, depth + 1)
                elif item.path.lower().endswith(AUDIO_SUFFIXES):
                    found.append(item.path)

        try:
            walk(None, 0)
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"cannot list the artifacts of run {run_id}: {str(exc).splitlines()[0][:300]}") from exc
        dest = self.cache_dir / run_id
        out = []
        for rel in sorted(found):
            local = dest / rel
            if not local.is_file():  # MLflow puts a file artifact into the given folder under its base name
                local.parent.mkdir(parents=True, exist_ok=True)
                try:
                    local = Path(client.download_artifacts(run_id, rel, str(local.parent)))
                except Exception as exc:  # noqa: BLE001
                    raise StoreError(f"cannot copy {rel} of run {run_id}: {str(exc).splitlines()[0][:300]}") from exc
            out.append(local)
        return out


def describe(run: RunInfo, compare_with: list[RunInfo] | None = None) -> str:
    """Markdown of a run: entry point, status, metrics, and the parameters that differ from ``compare_with``.

    Without runs to compare with, the parameters a listener cares about are shown (model source,
    sampler, prompt, duration, seed ...).
    """
    lines = [f"**{run.name}** ({run.entry_point}, {run.status.lower()}, {run.started})"
             + (f", trial of **{run.parent}**" if run.parent else ""), "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" for k, v in sorted(run.metrics.items())] or ["| (none) | |"]
    others = [o for o in (compare_with or []) if o.run_id != run.run_id]
    if others:
        keys = sorted(k for k in run.params if any(o.params.get(k) != run.params[k] for o in others))
        title = "parameters that differ"
    else:
        wanted = ("checkpoint", "sampler", "prompt", "duration", "seed", "cfg_scale", "steps", "adapters", "lr")
        keys = sorted(k for k in run.params if any(w in k for w in wanted))
        title = "parameters"
    lines += ["", f"| {title} | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(run.params[k])} |" for k in keys[:MAX_PARAMS]] or ["| (none) | |"]
    if len(keys) > MAX_PARAMS:
        lines.append(f"| … {len(keys) - MAX_PARAMS} more | |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    text = str(value).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 80 else text[:77] + "…"
