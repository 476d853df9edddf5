"""Atomic checkpoints: safetensors weights + resolved config + training state.

Layout of ``<run_dir>/checkpoints/step_00001000/``::

    model.safetensors   every module's weights, keys prefixed ``<module>.`` (no pickle)
    state.pt            optimisers, schedulers, step, RNG states, data position (weights_only)
    config.yaml         the resolved config of the run
    meta.json           step, config hash, time, file sizes
    deepspeed/          DeepSpeed runs only: the engine state with every rank's ZeRO shard
    COMPLETE            written last

A checkpoint is assembled in a hidden staging directory and renamed into place, so a kill at any
moment leaves either the previous checkpoint set or the new complete one, never half a
checkpoint; leftovers of a killed save are cleaned by the next save or resume. Loading only
accepts directories with ``COMPLETE`` and never unpickles objects
(``torch.load(weights_only=True)``); the ``deepspeed/`` part is read by DeepSpeed's own loader.
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

log = logging.getLogger("musicdiff.checkpoint")

WEIGHTS = "model.safetensors"
STATE = "state.pt"
CONFIG = "config.yaml"
META = "meta.json"
COMPLETE = "COMPLETE"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match the model."""


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
    """Write a complete checkpoint directory atomically and rotate old ones.

    Args:
        ckpt_root: ``<run_dir>/checkpoints``.
        step: optimiser step; names the directory.
        modules: name → module; weights stored as ``<name>.<param>``.
        state: optimisers/schedulers/step/RNG/data position (tensors and plain python only).
        config: resolved run config.
        config_hash: stored in ``meta.json``.
        keep_last: keep only this many newest complete checkpoints (None/0: keep all).
        staging: a directory from :func:`begin_checkpoint` that already holds other ranks' files;
            None creates one.

    Returns:
        The final checkpoint directory.
    """
    root = Path(ckpt_root)
    final = root / f"step_{step:08d}"
    tmp = Path(staging) if staging is not None else begin_checkpoint(root, step)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        tensors.update(state_dict_for_save(module, prefix=f"{name}."))
    save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt", "step": str(step)})
    torch.save(dict(state), tmp / STATE)
    if config is not None:
        text = OmegaConf.to_yaml(config, resolve=True) if isinstance(config, DictConfig) else OmegaConf.to_yaml(OmegaConf.create(config))
        (tmp / CONFIG).write_text(text)
    meta = {"step": step, "config_hash": config_hash, "time": time.time(), "modules": list(modules),
            "files": {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}}
    (tmp / META).write_text(json.dumps(meta, indent=2))
    _fsync_tree(tmp)
    (tmp / COMPLETE).write_text("ok\n")
    _fsync_dir(tmp)
    if final.exists():
        old = root / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    if keep_last:
        for stale in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
    log.info("saved checkpoint %s", final)
    return final


def list_checkpoints(ckpt_root: str | Path) -> list[Path]:
    """Complete checkpoint directories under ``ckpt_root``, oldest first."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if p.is_dir() and (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(ckpt_root: str | Path) -> Path | None:
    """Newest complete checkpoint, or None."""
    found = list_checkpoints(ckpt_root)
    return found[-1] if found else None


def load_checkpoint(path: str | Path, modules: Mapping[str, nn.Module] | None = None,
                    strict: bool = True) -> dict[str, Any]:
    """Load weights into ``modules`` and return the training state.

    Args:
        path: a checkpoint directory (must contain ``COMPLETE``).
        modules: name → module to load into (prefix ``<name>.``); None to skip weights.
        strict: require exact key match per module.

    Returns:
        The ``state`` dict saved with the checkpoint (``{}`` if absent).

    Raises:
        CheckpointError: if the directory is missing or incomplete, or keys do not match.
    """
    path = Path(path)
    if not (path / COMPLETE).is_file():
        raise CheckpointError(f"{path} is not a complete musicdiff checkpoint (no {COMPLETE} marker)")
    if modules:
        tensors = load_file(str(path / WEIGHTS))
        for name, module in modules.items():
            load_prefixed(module, tensors, f"{name}.", strict=strict, source=str(path))
    state_path = path / STATE
    return torch.load(state_path, weights_only=True, map_location="cpu") if state_path.is_file() else {}


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


def export_modules(out_dir: str | Path, modules: Mapping[str, nn.Module], config: DictConfig | dict | None = None,
                   config_hash: str | None = None) -> Path:
    """Write inference weights (``<name>.safetensors``) + ``config.yaml`` for the other entry points.

    The export directory is assembled under a temp name and renamed, like a checkpoint.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, module in modules.items():
        save_file(state_dict_for_save(module), str(tmp / f"{name}.safetensors"),
                  metadata={"config_hash": config_hash or ""})
    if config is not None:
        cfg = config if isinstance(config, DictConfig) else OmegaConf.create(config)
        (tmp / CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (tmp / META).write_text(json.dumps({"modules": list(modules), "config_hash": config_hash}, indent=2))
    (tmp / COMPLETE).write_text("ok\n")
    if out.exists():
        old = out.with_name(f".old-{out.name}-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def load_exported(path: str | Path, name: str, module: nn.Module, strict: bool = True) -> nn.Module:
    """Load ``<path>/<name>.safetensors`` (an export dir) into ``module``.

    Raises:
        CheckpointError: if the file is missing or does not match.
    """
    path = Path(path)
    file = path / f"{name}.safetensors"
    if not file.is_file():
        raise CheckpointError(f"{file} not found: expected an export directory written by musicdiff-train "
                              f"(<run_dir>/export) containing {name}.safetensors")
    missing, unexpected = module.load_state_dict(load_file(str(file)), strict=False)
    if strict and (missing or unexpected):
        raise CheckpointError(f"{file} does not match the configured {name}: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]} (check the config groups used at training)")
    return module


def exported_config(path: str | Path) -> DictConfig:
    """The resolved training config stored with an export or checkpoint directory."""
    file = Path(path) / CONFIG
    if not file.is_file():
        raise CheckpointError(f"{file} not found")
    return OmegaConf.load(file)  # type: ignore[return-value]
