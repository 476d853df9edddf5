"""Sidecar metadata manifests: captions and tags for the files of an audio folder.

A manifest maps audio paths (relative to the folder) to metadata fields such as ``caption``,
``genre``, ``mood``, ``instruments``, ``bpm`` or ``key`` — the fields SA2 builds its prompts from
(see :mod:`musicdiff.data.prompts`). Accepted layouts:

* JSON list of objects, each with a path key (``path``, ``file``, ``filename``, ``audio``)::

    [{"path": "a/song.wav", "caption": "calm piano", "bpm": 90}, ...]

* JSON object ``{path: {fields}}``;
* JSON Lines: one object with a path key per line;
* CSV with a header containing a path column (other columns are fields; empty cells dropped).

A file with no entry may still carry a per-file sidecar ``<name>.json`` next to it; a sidecar that
is not a valid JSON object raises :class:`MetadataError` (the datasets skip, log and count the file
as ``bad_metadata`` rather than train it with an empty prompt).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

PATH_KEYS = ("path", "file", "filename", "audio", "audio_path")
MANIFEST_NAMES = ("metadata.json", "metadata.jsonl", "metadata.csv", "manifest.json", "manifest.jsonl",
                  "manifest.csv")


def normalize_relpath(path: str | Path) -> str:
    """Manifest key for ``path``: POSIX separators, no leading ``./``."""
    text = str(path).replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return str(PurePosixPath(text))


def _entry(obj: Any, where: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected an object with a path key, got {type(obj).__name__}")
    for key in PATH_KEYS:
        if obj.get(key):
            fields = {k: v for k, v in obj.items() if k != key and v is not None and v != ""}
            return normalize_relpath(obj[key]), fields
    raise ValueError(f"{where}: no path key (one of {PATH_KEYS}) in entry {obj!r:.200}")


def read_manifest(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read a JSON / JSONL / CSV manifest into ``{relative path: {field: value}}``.

    Raises:
        FileNotFoundError: the manifest does not exist.
        ValueError: unknown extension, malformed content or entries without a path.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    suffix = path.suffix.lower()
    out: dict[str, dict[str, Any]] = {}
    try:
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, list):
                for i, obj in enumerate(data):
                    key, fields = _entry(obj, f"{path} entry {i}")
                    out[key] = fields
            elif isinstance(data, dict):
                for key, fields in data.items():
                    if not isinstance(fields, dict):
                        fields = {"caption": fields} if isinstance(fields, str) else None
                    if fields is None:
                        raise ValueError(f"{path}: value of {key!r} must be an object or a caption string")
                    out[normalize_relpath(key)] = {k: v for k, v in fields.items() if v is not None and v != ""}
            else:
                raise ValueError(f"{path}: expected a JSON list or object, got {type(data).__name__}")
        elif suffix == ".jsonl":
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
                if line.strip():
                    key, fields = _entry(json.loads(line), f"{path} line {i + 1}")
                    out[key] = fields
        elif suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                if not reader.fieldnames or not any(k in reader.fieldnames for k in PATH_KEYS):
                    raise ValueError(f"{path}: CSV header needs a path column (one of {PATH_KEYS})")
                for i, row in enumerate(reader):
                    key, fields = _entry(dict(row), f"{path} row {i + 2}")
                    out[key] = fields
        else:
            raise ValueError(f"{path}: unknown manifest type {suffix!r} (use .json, .jsonl or .csv)")
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from e
    return out


def find_manifest(root: str | Path) -> Path | None:
    """The first of :data:`MANIFEST_NAMES` present in ``root``, or ``None``."""
    for name in MANIFEST_NAMES:
        candidate = Path(root) / name
        if candidate.is_file():
            return candidate
    return None


class MetadataError(ValueError):
    """A metadata sidecar exists but cannot be used (unreadable, invalid JSON, not an object)."""

    def __init__(self, path: str | Path, detail: str) -> None:
        self.path = str(path)
        shown = os.fsencode(path).decode("utf-8", "backslashreplace")
        super().__init__(f"{shown}: {detail}")


def sidecar_metadata(audio_path: str | Path) -> dict[str, Any]:
    """Fields of a per-file ``<audio stem>.json`` sidecar, or ``{}`` if there is none.

    Raises:
        MetadataError: naming the sidecar, if it exists but is unreadable, not valid JSON or not a
            JSON object (its caption would otherwise silently become an empty prompt).
    """
    sidecar = Path(audio_path).with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MetadataError(sidecar, f"invalid JSON sidecar ({e})") from e
    except (OSError, ValueError) as e:  # unreadable, or not UTF-8
        raise MetadataError(sidecar, f"unreadable sidecar ({e})") from e
    if not isinstance(data, dict):
        raise MetadataError(sidecar, f"sidecar must hold a JSON object of fields, got {type(data).__name__}")
    return {k: v for k, v in data.items() if v is not None and v != ""}
