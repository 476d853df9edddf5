"""Per-file checksums for checkpoint and export directories, and the non-finite weights guard.

A directory written by musicdiff (a training checkpoint ``step_*/`` or an inference export)
records in its ``meta.json`` one entry per file::

    "files": {"model.safetensors": {"size": 123456, "sha256": "9f86d0..."}, ...}

:func:`file_records` computes these entries after writing, :func:`verify_records` checks them
before loading, so a bit flip, a truncated copy or a file replaced by garbage is found and named
instead of loading silently wrong weights. Checkpoints written before checksums existed record
``{"model.safetensors": 123456}`` (size only); :func:`verify_records` still checks those sizes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import torch

#: Bookkeeping files that are not recorded: ``meta.json`` holds the records, ``COMPLETE`` is
#: written after them.
UNRECORDED = frozenset({"meta.json", "COMPLETE"})

_CHUNK = 1 << 22  # 4 MiB reads: hashing runs at disk speed without holding a file in memory


class NonFiniteWeightsError(ValueError):
    """Weights about to be written contain NaN or infinity."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 digest of a file, read in chunks.

    Args:
        path: the file.

    Returns:
        64 lowercase hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(directory: str | Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file under ``directory`` (recursively), except ``meta.json``/``COMPLETE``.

    Args:
        directory: a checkpoint or export directory, fully written.

    Returns:
        POSIX relative path -> ``{"size": bytes, "sha256": hex digest}``, sorted by path.
    """
    root = Path(directory)
    records: dict[str, dict[str, Any]] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel not in UNRECORDED:
            records[rel] = {"size": p.stat().st_size, "sha256": sha256_file(p)}
    return records


def has_checksums(records: Mapping[str, Any]) -> bool:
    """True if every record carries a SHA-256 (False for size-only records of older checkpoints)."""
    return bool(records) and all(isinstance(r, Mapping) and "sha256" in r for r in records.values())


def verify_records(directory: str | Path, records: Mapping[str, Any]) -> list[str]:
    """Check the files of ``directory`` against recorded sizes and checksums.

    Sizes are compared first (cheap; catches truncated copies), then checksums. Records without
    ``sha256`` (a bare size, as older checkpoints wrote) are checked by size only.

    Args:
        directory: the directory the records describe.
        records: relative path -> ``{"size", "sha256"}`` (from :func:`file_records`) or -> size.

    Returns:
        One human-readable problem per bad file, each naming the file; empty if all files match.
    """
    root = Path(directory)
    problems: list[str] = []
    if not isinstance(records, Mapping):
        return [f"{root}: the recorded file list is unreadable ({type(records).__name__})"]
    for rel, rec in records.items():
        path = root / rel
        size = rec if isinstance(rec, int) else rec.get("size") if isinstance(rec, Mapping) else None
        digest = rec.get("sha256") if isinstance(rec, Mapping) else None
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        actual = path.stat().st_size
        if size is not None and actual != size:
            how = "truncated" if actual < size else "longer than written"
            problems.append(f"{path}: {actual} bytes but {size} were written ({how})")
        elif digest is not None and sha256_file(path) != digest:
            problems.append(f"{path}: SHA-256 checksum mismatch (the file changed after it was written: "
                            f"disk corruption or an edit)")
    return problems


def assert_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse weights containing NaN or infinity, naming the first bad tensor.

    Args:
        tensors: name -> tensor (non-tensor values and integer tensors are skipped).
        what: what is being written, for the message (e.g. ``"checkpoint runs/x/step_00001000"``).

    Raises:
        NonFiniteWeightsError: if a floating-point tensor has a non-finite value.
    """
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or not (t.is_floating_point() or t.is_complex()) or not t.numel():
            continue
        finite = torch.isfinite(t.detach())
        if not bool(finite.all()):
            bad = int(finite.numel() - finite.sum())
            raise NonFiniteWeightsError(
                f"refusing to write {what}: tensor '{name}' has {bad} non-finite (NaN/inf) value"
                f"{'s' if bad != 1 else ''} out of {t.numel()} (training diverged: resume from an earlier "
                f"checkpoint with a lower learning rate)")


def describe_problems(problems: list[str], limit: int = 2) -> str:
    """Join problems into one line, the first ``limit`` in full and a count of the rest."""
    text = "; ".join(problems[:limit])
    return text + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")


__all__ = ["UNRECORDED", "NonFiniteWeightsError", "assert_finite", "describe_problems", "file_records",
           "has_checksums", "sha256_file", "verify_records"]
