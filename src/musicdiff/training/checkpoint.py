"""Atomic checkpoints: safetensors weights + resolved config + training state.

Layout of ``<run_dir>/checkpoints/step_00001000/``::

    model.safetensors   every module's weights, keys prefixed ``<module>.`` (no pickle)
    state.pt            optimisers, schedulers, step, RNG states, data position (weights_only)
    config.yaml         the resolved config of the run
    meta.json           step, config hash, time, size and SHA-256 of every other file
    deepspeed/          DeepSpeed runs only: the engine state with every rank's ZeRO shard
    COMPLETE            written last

A checkpoint is assembled in a hidden staging directory and renamed into place, so a kill at any
moment leaves either the previous checkpoint set or the new complete one, never half a
checkpoint; leftovers of a killed save are cleaned by the next save or resume. A failed write
(disk full) removes the staging directory and raises one :class:`CheckpointError` line; weights
with NaN/inf are never written (:class:`~musicdiff.files.checksums.NonFiniteWeightsError`).

Bit rot: the checksums in ``meta.json`` are verified before a checkpoint is resumed
(:func:`verify_checkpoint`, :func:`latest_verified_checkpoint` falls back to the newest one that
verifies) and rotation never deletes the newest checkpoint that verifies. Loading only accepts
directories with ``COMPLETE`` and never unpickles objects (``torch.load(weights_only=True)``); the
``deepspeed/`` part is read by DeepSpeed's own loader.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file
from torch import nn

from musicdiff.files.checksums import (
    NonFiniteWeightsError,
    assert_finite,
    describe_problems,
    file_records,
    has_checksums,
    verify_records,
)

log = logging.getLogger("musicdiff.checkpoint")

WEIGHTS = "model.safetensors"
STATE = "state.pt"
CONFIG = "config.yaml"
META = "meta.json"
COMPLETE = "COMPLETE"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, cannot be written or does not match the model."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's files fail verification or cannot be read (bit rot, truncation, garbage)."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def state_dict_for_save(module: nn.Module | Mapping[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """CPU, contiguous copy of a state dict whose tensors share no storage (safetensors needs that)."""
    sd = module.state_dict() if isinstance(module, nn.Module) else module
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        t = v.detach().to("cpu").contiguous()
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            t = t.clone()  # tied weights: safetensors refuses tensors that share storage
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        out[prefix + k] = t
    return out


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file atomically (temp file in the same dir + rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=metadata)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU + CUDA) as weights_only-loadable objects."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def staging_dir(ckpt_root: str | Path, step: int) -> Path:
    """The hidden directory checkpoint ``step`` is assembled in (the same path on every rank)."""
    return Path(ckpt_root) / f".tmp-step_{step:08d}"


def clean_staging(ckpt_root: str | Path) -> None:
    """Remove what killed saves left behind (main rank, before saving or resuming).

    A ``.tmp-*`` directory never got its rename and is deleted. A ``.old-step_*`` directory is the
    previous copy of a checkpoint that was being replaced: it is put back if the kill came
    between the two renames (no ``step_*`` of that name), else deleted.
    """
    root = Path(ckpt_root)
    if not root.is_dir():
        return
    for p in root.glob(".old-step_*"):
        final = root / p.name[len(".old-"):].rsplit("-", 1)[0]
        if not final.exists() and (p / COMPLETE).is_file():
            os.replace(p, final)
            log.warning("restored %s from an interrupted replacement", final)
        else:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp-step_*"):
        shutil.rmtree(p, ignore_errors=True)


def begin_checkpoint(ckpt_root: str | Path, step: int) -> Path:
    """Clean leftovers and create an empty staging directory for ``step`` (main rank only).

    Other ranks may write their own files into it (DeepSpeed ZeRO shards) before the main rank
    calls :func:`save_checkpoint` with ``staging=``.
    """
    root = Path(ckpt_root)
    root.mkdir(parents=True, exist_ok=True)
    clean_staging(root)
    tmp = staging_dir(root, step)
    tmp.mkdir()
    return tmp


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*"), reverse=True):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        else:
            _fsync_dir(p)


def save_checkpoint(ckpt_root: str | Path, step: int, modules: Mapping[str, nn.Module],
                    state: Mapping[str, Any], config: DictConfig | dict | None = None,
                    config_hash: str | None = None, keep_last: int | None = None,
                    staging: Path | None = None) -> Path:
    """Write a complete checkpoint directory atomically, verify it and rotate old ones.

    Args:
        ckpt_root: ``<run_dir>/checkpoints``.
        step: optimiser step; names the directory.
        modules: name → module; weights stored as ``<name>.<param>``.
        state: optimisers/schedulers/step/RNG/data position (tensors and plain python only).
        config: resolved run config.
        config_hash: stored in ``meta.json``.
        keep_last: keep only this many newest complete checkpoints (None/0: keep all); the newest
            checkpoint that verifies is never deleted (:func:`rotate_checkpoints`).
        staging: a directory from :func:`begin_checkpoint` that already holds other ranks' files;
            None creates one.

    Returns:
        The final checkpoint directory.

    Raises:
        NonFiniteWeightsError: a weight is NaN/inf; nothing is written (a diverged run must not
            replace or rotate away the good checkpoints it resumes from).
        CheckpointError: writing failed (disk full, I/O error); the staging directory is removed
            and the previous checkpoints are untouched.
    """
    root = Path(ckpt_root)
    final = root / f"step_{step:08d}"
    tmp = Path(staging) if staging is not None else staging_dir(root, step)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors.update(state_dict_for_save(module, prefix=f"{name}."))
    try:
        assert_finite(tensors, f"checkpoint {final}")
        if staging is None:
            begin_checkpoint(root, step)
        _write_files(tmp, step, tensors, state, config,
                     {"step": step, "config_hash": config_hash, "time": time.time(), "modules": list(modules)})
    except NonFiniteWeightsError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:  # disk full, I/O error, ...: one line naming the checkpoint
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(_write_failure(final, e)) from e
    if final.exists():
        old = root / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    problems = verify_checkpoint(final)
    if problems:
        log.error("checkpoint %s fails verification right after writing (%s): older checkpoints are kept",
                  final, describe_problems(problems))
    if keep_last:
        rotate_checkpoints(root, keep_last, verified=None if problems else final)
    log.info("saved checkpoint %s", final)
    return final


def _write_files(tmp: Path, step: int, tensors: dict[str, torch.Tensor], state: Mapping[str, Any],
                 config: DictConfig | dict | None, meta: dict[str, Any]) -> None:
    """Weights, state, config, then ``meta.json`` with every file's size and SHA-256, then ``COMPLETE``."""
    save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt", "step": str(step)})
    torch.save(dict(state), tmp / STATE)
    if config is not None:
        text = OmegaConf.to_yaml(config, resolve=True) if isinstance(config, DictConfig) else OmegaConf.to_yaml(OmegaConf.create(config))
        (tmp / CONFIG).write_text(text)
    meta["files"] = file_records(tmp)  # hashes what is on disk (DeepSpeed shards of other ranks included)
    (tmp / META).write_text(json.dumps(meta, indent=2))
    _fsync_tree(tmp)
    (tmp / COMPLETE).write_text("ok\n")
    _fsync_dir(tmp)


def _write_failure(final: Path, exc: BaseException) -> str:
    reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else " ".join(str(exc).split())[:200]
    try:
        free = f" ({shutil.disk_usage(final.parent).free / 2**20:.0f} MiB free on that disk)"
    except OSError:
        free = ""
    return (f"could not write checkpoint {final}: {reason or type(exc).__name__}{free}; "
            f"nothing was written there and the previous checkpoints are intact")


def _step(path: Path) -> int:
    return int(path.name.split("_")[1])


def list_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Complete checkpoint directories under ``ckpt_root``, oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if p.is_dir() and (p / COMPLETE).is_file()]
    return sorted(found, key=_step)


def latest_checkpoint(ckpt_root: str | Path) -> Path | None:
    """Newest complete checkpoint, or None (not verified: see :func:`latest_verified_checkpoint`)."""
    found = list_checkpoints(ckpt_root)
    return found[-1] if found else None


def verify_checkpoint(path: str | Path) -> list[str]:
    """Check a checkpoint's files against the sizes and SHA-256 checksums in its ``meta.json``.

    Checkpoints written before checksums existed are checked by size only (an INFO line says so).

    Args:
        path: a checkpoint directory.

    Returns:
        Problems, each naming the file (missing, truncated, checksum mismatch); empty if it verifies.
    """
    path = Path(path)
    if not (path / COMPLETE).is_file():
        return [f"{path} is not a complete musicdiff checkpoint (no {COMPLETE} marker)"]
    try:
        records = json.loads((path / META).read_text()).get("files")
    except (OSError, ValueError, AttributeError) as e:
        return [f"{path / META}: unreadable ({' '.join(str(e).split())})"]
    if not isinstance(records, dict) or WEIGHTS not in records:
        return [f"{path / META}: records no files (expected at least {WEIGHTS})"]
    if not has_checksums(records):
        log.info("%s was written without checksums (older musicdiff): checking file sizes only", path)
    return verify_records(path, records)


def latest_verified_checkpoint(ckpt_root: str | Path, skip: tuple[Path, ...] | set[Path] = ()) -> Path | None:
    """Newest complete checkpoint whose files verify; damaged newer ones are skipped with a WARNING.

    Args:
        ckpt_root: ``<run_dir>/checkpoints``.
        skip: checkpoints already found unusable (e.g. their ``state.pt`` did not load).

    Returns:
        The checkpoint, or None if there is no checkpoint at all.

    Raises:
        CorruptCheckpointError: if checkpoints exist but none is usable (starting over silently
            would discard the run).
    """
    found = list_checkpoints(ckpt_root)
    newest = found[-1] if found else None
    for path in reversed(found):
        if path in skip:
            continue
        problems = verify_checkpoint(path)
        if not problems:
            if path != newest:
                log.warning("falling back to %s, the newest checkpoint that verifies", path)
            return path
        log.warning("checkpoint %s is damaged and skipped: %s", path, describe_problems(problems))
    if found:
        raise CorruptCheckpointError(
            f"no checkpoint under {ckpt_root} is usable ({len(found)} damaged, see the warnings above): restore "
            f"one from a backup, or move them away and pass trainer.resume=never to start over")
    return None


def rotate_checkpoints(ckpt_root: str | Path, keep_last: int, verified: Path | None = None) -> list[Path]:
    """Delete all but the ``keep_last`` newest checkpoints, never the newest one that verifies.

    Only checkpoints older than the newest checkpoint that verifies are deleted, so damaged new
    checkpoints can never cost the last good one (more than ``keep_last`` are kept then).

    Args:
        ckpt_root: ``<run_dir>/checkpoints``.
        keep_last: how many newest checkpoints to keep (>= 1).
        verified: a checkpoint already known to verify (the one just written), not hashed again.

    Returns:
        The deleted directories.
    """
    found = list_checkpoints(ckpt_root)
    stale = found[:-keep_last] if keep_last > 0 else []
    if not stale:
        return []
    good = next((p for p in reversed(found) if p == verified or not verify_checkpoint(p)), None)
    doomed = [p for p in stale if good is not None and _step(p) < _step(good)]
    if len(doomed) < len(stale):
        log.warning("rotation keeps %d checkpoint(s) beyond keep_last=%d: %s", len(stale) - len(doomed), keep_last,
                    f"{good} is the newest that verifies" if good else "none verifies")
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


def load_checkpoint(path: str | Path, modules: Mapping[str, nn.Module] | None = None,
                    strict: bool = True, verify: bool = False) -> dict[str, Any]:
    """Load weights into ``modules`` and return the training state.

    The state and the weights are read before any module is touched, so a damaged checkpoint
    leaves the modules as they were.

    Args:
        path: a checkpoint directory (must contain ``COMPLETE``).
        modules: name → module to load into (prefix ``<name>.``); None to skip weights.
        strict: require exact key match per module.
        verify: check sizes and checksums first (:func:`verify_checkpoint`); callers that chose
            the checkpoint with :func:`latest_verified_checkpoint` already did.

    Returns:
        The ``state`` dict saved with the checkpoint (``{}`` if absent).

    Raises:
        CorruptCheckpointError: if a file fails verification or cannot be read (names the file).
        CheckpointError: if the directory is missing or incomplete, or keys do not match.
    """
    path = Path(path)
    if not (path / COMPLETE).is_file():
        raise CheckpointError(f"{path} is not a complete musicdiff checkpoint (no {COMPLETE} marker)")
    if verify and (problems := verify_checkpoint(path)):
        raise CorruptCheckpointError(f"checkpoint {path} is damaged: {describe_problems(problems)}")
    state_path = path / STATE
    state = _read_state(state_path) if state_path.is_file() else {}
    if modules:
        try:
            tensors = load_file(str(path / WEIGHTS))
        except Exception as e:  # SafetensorError (truncated/garbage header), OSError
            raise CorruptCheckpointError(f"{path / WEIGHTS}: unreadable ({' '.join(str(e).split())})") from e
        for name, module in modules.items():
            load_prefixed(module, tensors, f"{name}.", strict=strict, source=str(path))
    return state


def _read_state(state_path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with one clear line naming the file when it fails."""
    try:
        state = torch.load(state_path, weights_only=True, map_location="cpu")
    except Exception as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "GLOBAL" in ln), None)
        if detail:  # a pickled object other than tensors/plain values: never executed
            raise CorruptCheckpointError(f"{state_path}: refused to unpickle a Python object that weights_only "
                                         f"loading does not allow ({detail})") from e
        noise = ("Check the documentation", "Please file")
        detail = next((ln for ln in lines[1:] if not ln.startswith(noise)),
                      f"{type(e).__name__} {lines[0] if lines else ''}".strip())
        raise CorruptCheckpointError(f"{state_path}: not a training state written by musicdiff (corrupted or "
                                     f"replaced: {detail[:200]})") from e
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{state_path}: holds a {type(state).__name__}, not a training state dict")
    return state


def load_prefixed(module: nn.Module, tensors: Mapping[str, torch.Tensor], prefix: str, strict: bool = True,
                  source: str = "") -> None:
    """Load the ``prefix``-ed subset of ``tensors`` into ``module`` with a clear error on mismatch."""
    sub = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not sub and strict:
        raise CheckpointError(f"{source}: no weights for module '{prefix[:-1]}'")
    missing, unexpected = module.load_state_dict(sub, strict=False)
    if strict and (missing or unexpected):
        raise CheckpointError(f"{source}: module '{prefix[:-1]}' does not match the checkpoint: "
                              f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
