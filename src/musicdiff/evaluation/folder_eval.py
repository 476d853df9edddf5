"""Score any folder of audio against reference audio and prompts (``musicdiff-evaluate``).

Generated files can come from musicdiff or any other system (e.g. MusicGen): items are named
by their path relative to the folder, paired with references by file id, and matched with
prompts by name. Metrics are objects with ``name``, ``requires`` (a tuple naming
``"reference"`` and/or ``"prompts"``) and ``evaluate(generated, reference, prompts) -> dict``.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from musicdiff.data.audio_io import AudioLoadError, load_audio
from musicdiff.evaluation.embedders import AudioSet

log = logging.getLogger("musicdiff.evaluation")

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
_PROMPT_KEYS = ("prompt", "caption", "text", "description")
_NAME_KEYS = ("path", "name", "id", "file", "filename")


class MetricSuite:
    """A named collection of metrics (the node of ``conf/metrics/*.yaml``).

    Args:
        metrics: ``{key: metric}`` (Hydra-instantiated) or a list of metrics; ``None`` entries
            (disabled in a config override) are dropped.
        sample_rate: rate audio is loaded at; default the highest rate of the metrics' embedders.
        channels: channels audio is loaded with.
    """

    def __init__(self, metrics: Mapping[str, Any] | Sequence[Any], sample_rate: int | None = None,
                 channels: int = 2) -> None:
        items = list(metrics.values()) if isinstance(metrics, Mapping) else list(metrics)
        self.metrics = [m for m in items if m is not None]
        self.sample_rate, self.channels = sample_rate, int(channels)

    def __iter__(self):
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)


def load_audio_file(path: str | Path, sample_rate: int, channels: int) -> torch.Tensor:
    """Load ``path`` as float32 ``[channels, T]`` at ``sample_rate`` (``musicdiff.data.audio_io``).

    Raises:
        AudioLoadError: for unreadable, empty or non-finite files.
    """
    return load_audio(str(path), sample_rate, channels)


def list_audio_files(folder: str | Path, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"audio folder not found: {root}")
    exts = {e.lower() for e in extensions}
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)


def load_folder(folder: str | Path, sample_rate: int, channels: int = 2,
                extensions: Iterable[str] = AUDIO_EXTENSIONS) -> tuple[AudioSet, int]:
    """Load every readable audio file of ``folder``; returns the set and the number skipped.

    Names are paths relative to ``folder`` (POSIX). Unreadable files are skipped with a warning.

    Raises:
        FileNotFoundError: if the folder is missing.
        ValueError: if it holds no readable audio.
    """
    files = list_audio_files(folder, extensions)
    audio, names, skipped = [], [], 0
    for f in files:
        try:
            audio.append(load_audio_file(f, sample_rate, channels))
            names.append(f.relative_to(folder).as_posix())
        except AudioLoadError as e:
            skipped += 1
            log.warning("skipping unreadable audio %s: %s", f, e)
    if not audio:
        raise ValueError(f"no readable audio files in {folder} ({len(files)} candidates, {skipped} unreadable)")
    return AudioSet(audio, names, sample_rate), skipped


def _prompt_of(record: Mapping[str, Any]) -> str | None:
    for k in _PROMPT_KEYS:
        if isinstance(record.get(k), str):
            return record[k]
    return None


def _records_to_prompts(records: Iterable[Mapping[str, Any]], source: str) -> dict[str, str]:
    out = {}
    for r in records:
        name = next((str(r[k]) for k in _NAME_KEYS if r.get(k) not in (None, "")), None)
        prompt = _prompt_of(r)
        if name is None or prompt is None:
            raise ValueError(f"{source}: each record needs one of {_NAME_KEYS} and one of {_PROMPT_KEYS}; got {dict(r)}")
        out[name] = prompt
    return out


def read_prompts(source: str | Path | Mapping[str, Any]) -> dict[str, str]:
    """Read prompts keyed by file name (relative path, path without extension, or stem).

    Accepted: a dict; a JSON object ``{name: prompt | {"prompt": ...}}`` or list of records;
    JSONL records; a CSV with a name column (path/name/id/file) and a prompt column
    (prompt/caption/text/description); a text file of ``name<TAB>prompt`` lines.
    """
    if isinstance(source, Mapping):
        data: Any = source
        where = "prompts"
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"prompts file not found: {path}")
        where, text, suffix = str(path), path.read_text(encoding="utf-8"), path.suffix.lower()
        if suffix == ".json":
            data = json.loads(text)
        elif suffix == ".jsonl":
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".csv":
            data = list(csv.DictReader(text.splitlines()))
        else:
            data = {}
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    if "\t" not in line:
                        raise ValueError(f"{path}:{n}: expected 'name<TAB>prompt'")
                    name, prompt = line.split("\t", 1)
                    data[name.strip()] = prompt.strip()
    if isinstance(data, Mapping):
        out = {}
        for name, v in data.items():
            prompt = v if isinstance(v, str) else _prompt_of(v) if isinstance(v, Mapping) else None
            if prompt is None:
                raise ValueError(f"{where}: no prompt for {name!r} (expected a string or a record with {_PROMPT_KEYS})")
            out[str(name)] = prompt
        return out
    if isinstance(data, list):
        return _records_to_prompts(data, where)
    raise ValueError(f"{where}: unsupported prompts format ({type(data).__name__})")


def evaluate_folders(generated_dir: str | Path, reference_dir: str | Path | None = None,
                     prompts: str | Path | Mapping[str, Any] | None = None,
                     metrics: MetricSuite | Sequence[Any] = (), sample_rate: int | None = None,
                     channels: int | None = None, strict: bool = False) -> dict[str, float]:
    """Evaluate a folder of generated audio with ``metrics``.

    Args:
        generated_dir: folder of generated audio (any system).
        reference_dir: folder of reference audio (needed by FD and KL).
        prompts: prompts file or mapping (needed by the CLAP score), see :func:`read_prompts`.
        metrics: a :class:`MetricSuite` or a list of metric objects.
        sample_rate: load rate; default the suite's, else the highest embedder rate, else 44100.
        channels: load channels; default the suite's, else 2.
        strict: raise when a metric's inputs are missing instead of skipping it with a warning.

    Returns:
        ``{metric key: value}`` plus ``num_generated``, ``num_reference``, ``num_skipped_files``.
    """
    metric_list = list(metrics)
    if not metric_list:
        raise ValueError("evaluate_folders: no metrics given")
    sr = sample_rate or getattr(metrics, "sample_rate", None)
    if sr is None:
        rates = [getattr(e, "sample_rate", None) for m in metric_list
                 for e in (getattr(m, "embedder", None), getattr(m, "classifier", None)) if e is not None]
        sr = max([r for r in rates if isinstance(r, int)], default=44100)
    ch = channels or getattr(metrics, "channels", 2)
    generated, skipped = load_folder(generated_dir, sr, ch)
    reference = None
    if reference_dir is not None:
        reference, skipped_ref = load_folder(reference_dir, sr, ch)
        skipped += skipped_ref
    prompt_map = read_prompts(prompts) if prompts is not None else None
    available = {"reference": reference is not None, "prompts": bool(prompt_map)}
    results: dict[str, float] = {}
    for m in metric_list:
        missing = [r for r in getattr(m, "requires", ()) if not available.get(r, False)]
        if missing:
            msg = f"metric {getattr(m, 'name', type(m).__name__)!r} needs {' and '.join(missing)}"
            if strict:
                raise ValueError(msg)
            log.warning("%s; skipped", msg)
            continue
        try:
            results.update(m.evaluate(generated, reference, prompt_map))
        except ValueError as exc:  # e.g. paired KL on folders whose file names do not pair up
            if strict:
                raise
            log.warning("%s; skipped", exc)
    results.update(num_generated=float(len(generated)), num_reference=float(len(reference) if reference else 0),
                   num_skipped_files=float(skipped))
    return results
