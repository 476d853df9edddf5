"""The musicdiff export directory: inference weights + the model's config, written atomically.

Layout of an export (``<run_dir>/export/`` of ``musicdiff-train``, or ``import_sat``'s output)::

    autoencoder.safetensors  dit.safetensors  conditioner.safetensors   one file per part (no pickle)
    config.yaml    the resolved config the parts were trained with (model groups + dataset window)
    meta.json      format, parts, config hash, size + sha256 of every file
    COMPLETE       written last

An export is *relocatable*: it holds every part it needs (a DiT export carries its autoencoder),
and the paths recorded in its config (``autoencoder_from``, ``init_from``, a SAT import's source)
are relative to the export directory. It is assembled under a temporary name and renamed into
place, so a reader sees the old export or the complete new one; weights that are not finite are
refused before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from safetensors.torch import save_file
from torch import nn

from musicdiff.files.checksums import assert_finite, file_records
from musicdiff.training.checkpoint import COMPLETE, CONFIG, META, _fsync_dir, _fsync_tree, state_dict_for_save

log = logging.getLogger("musicdiff.pretrained")

FORMAT = "musicdiff-export"
VERSION = 2
# Root keys of a training config that hold paths; stored relative to the export.
PATH_KEYS = ("init_from", "autoencoder_from")


def _relocatable(config: DictConfig, out: Path) -> DictConfig:
    """A copy of ``config`` whose path keys are relative to the export directory ``out``."""
    cfg = OmegaConf.create(OmegaConf.to_container(config, resolve=True))
    with open_dict(cfg):
        for key in PATH_KEYS:
            value = cfg.get(key)
            if isinstance(value, str) and value and "://" not in value:
                cfg[key] = os.path.relpath(Path(value).resolve(), out.resolve())
        source = OmegaConf.select(cfg, "reference.checkpoint")
        if isinstance(source, str) and source:
            cfg.reference.checkpoint = os.path.relpath(Path(source).resolve(), out.resolve())
    return cfg


def resolve_recorded_path(value: str, base: Path) -> Path:
    """A path read from an export's config: relative to the export, else (older exports) to the cwd."""
    path = Path(value)
    if path.is_absolute():
        return path
    beside = (base / path)
    return beside if beside.exists() or not path.exists() else path


def write_export(out_dir: str | Path, modules: Mapping[str, nn.Module | Mapping[str, torch.Tensor]],
                 config: DictConfig | Mapping[str, Any] | None = None, config_hash: str | None = None) -> Path:
    """Write an export directory atomically (see the module docstring).

    Args:
        out_dir: the export directory (replaced atomically if it exists).
        modules: part name → module or state dict, written as ``<name>.safetensors``.
        config: the resolved config of the run (model groups, dataset window, provenance).
        config_hash: recorded in ``meta.json`` and in each file's safetensors metadata.

    Returns:
        The export directory.

    Raises:
        NonFiniteWeightsError: a weight is NaN/Inf (nothing is written).
    """
    out = Path(out_dir)
    tensors = {name: state_dict_for_save(m) for name, m in modules.items()}
    for name, sd in tensors.items():
        assert_finite(sd, f"export part '{name}'")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name, sd in tensors.items():
            save_file(sd, str(tmp / f"{name}.safetensors"), metadata={"config_hash": config_hash or "", "part": name})
        if config is not None:
            cfg = config if isinstance(config, DictConfig) else OmegaConf.create(dict(config))
            (tmp / CONFIG).write_text(OmegaConf.to_yaml(_relocatable(cfg, out), resolve=False))
        meta = {"format": FORMAT, "version": VERSION, "modules": list(tensors), "config_hash": config_hash,
                "files": file_records(tmp)}
        (tmp / META).write_text(json.dumps(meta, indent=2))
        _fsync_tree(tmp)
        (tmp / COMPLETE).write_text("ok\n")
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".old-{out.name}-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    _fsync_dir(out.parent)
    log.info("exported %s to %s", ", ".join(tensors), out)
    return out
