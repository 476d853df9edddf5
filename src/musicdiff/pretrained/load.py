"""Open any trained model musicdiff knows, as built modules: the one place that knows file layouts.

Sources (:func:`detect`):

* ``export``: a musicdiff export directory (``musicdiff-train``'s ``<run_dir>/export`` or
  ``import_sat``'s output; see :mod:`musicdiff.pretrained.export`);
* ``checkpoint``: a training checkpoint directory ``<run_dir>/checkpoints/step_*`` (its EMA DiT by default);
* ``sat``: a stable-audio-tools checkpoint (``model.safetensors`` or ``.ckpt``, with the
  ``model_config.json`` beside it), e.g. Stable Audio Open 1.0, converted in memory;
* plus adapters (``adapters=["a.safetensors:0.8", ...]``) stacked on the DiT.

Every config read from a file is checked against the allow-list of
:mod:`musicdiff.pretrained.safe_config` before anything is instantiated, recorded checksums are
verified before weights are read, and weights are loaded with a strict key check.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file
from torch import nn

from musicdiff.pretrained.export import resolve_recorded_path
from musicdiff.pretrained.safe_config import check_targets, safe_instantiate
from musicdiff.training.checkpoint import COMPLETE, CONFIG, META, WEIGHTS, CheckpointError

log = logging.getLogger("musicdiff.pretrained")

PARTS = ("autoencoder", "dit", "conditioner")
SAT_CONFIG = "model_config.json"
SAT_WEIGHTS = ("model.safetensors", "model.ckpt")
# Root keys of a training config naming where its autoencoder came from (newest name first).
AUTOENCODER_KEYS = ("autoencoder_from", "init_from", "init_autoencoder")


class PretrainedError(CheckpointError):
    """A model source is missing, damaged, unsafe or does not match its config."""


@dataclass
class Pretrained:
    """The parts of a trained model (None where not requested or not available)."""

    source: Path | None
    kind: str  # export | checkpoint | sat | random
    config: DictConfig  # model groups: autoencoder, dit, conditioner (+ diffusion when known)
    autoencoder: nn.Module | None = None
    dit: nn.Module | None = None
    conditioner: nn.Module | None = None
    window_seconds: float | None = None
    adapters: list = field(default_factory=list)

    @property
    def sample_rate(self) -> int:
        """Audio rate of the autoencoder."""
        return int(self._autoencoder().sample_rate)

    @property
    def latent_rate(self) -> float:
        """Latent frames per second."""
        ae = self._autoencoder()
        return float(ae.sample_rate) / float(ae.downsampling_ratio)

    def window_latents(self, window_seconds: float | None = None) -> int:
        """Latent frames of the generation window (default: the training crop length)."""
        import math

        seconds = window_seconds if window_seconds is not None else self.window_seconds
        if seconds is None:
            raise PretrainedError(f"{self.source}: the window length is not recorded; set generator.window_seconds")
        return math.ceil(float(seconds) * self.latent_rate)

    def modules(self) -> dict[str, nn.Module]:
        """The loaded parts by name."""
        return {n: m for n in PARTS if (m := getattr(self, n)) is not None}

    def _autoencoder(self) -> nn.Module:
        if self.autoencoder is None:
            raise PretrainedError(f"{self.source}: no autoencoder loaded")
        return self.autoencoder


# ---------------------------------------------------------------- layouts
def detect(source: str | Path) -> tuple[str, Path]:
    """The kind of ``source`` and the path to read: ``(export | checkpoint | sat, path)``.

    Raises:
        PretrainedError: it does not exist or is none of the known layouts (naming what was looked for).
    """
    path = Path(source)
    if not path.exists():
        raise PretrainedError(f"{path} not found: expected a musicdiff export dir, a checkpoints/step_* dir or a "
                              f"stable-audio-tools model.safetensors/.ckpt with its {SAT_CONFIG}")
    if path.is_file():
        if path.suffix in (".safetensors", ".ckpt"):
            if not (path.with_name(SAT_CONFIG)).is_file():
                raise PretrainedError(f"{path}: a stable-audio-tools checkpoint needs {SAT_CONFIG} beside it")
            return "sat", path
        raise PretrainedError(f"{path}: not a model source (expected a directory, .safetensors or .ckpt)")
    if (path / SAT_CONFIG).is_file():
        for name in SAT_WEIGHTS:
            if (path / name).is_file():
                return "sat", path / name
        raise PretrainedError(f"{path}: has {SAT_CONFIG} but no {' or '.join(SAT_WEIGHTS)}")
    if not (path / COMPLETE).is_file():
        raise PretrainedError(f"{path} is not a complete musicdiff export or checkpoint (no {COMPLETE} marker; "
                              f"was it written by an interrupted run?)")
    if (path / WEIGHTS).is_file():
        return "checkpoint", path
    if any(path.glob("*.safetensors")):
        return "export", path
    raise PretrainedError(f"{path}: no weights found (*.safetensors)")


def _verify(path: Path) -> None:
    from musicdiff.files.checksums import verify_records

    meta_file = path / META
    if not meta_file.is_file():
        log.info("%s has no %s: file checksums not verified", path, META)
        return
    try:
        records = json.loads(meta_file.read_text()).get("files")
    except (ValueError, AttributeError) as err:
        raise PretrainedError(f"{meta_file} is not valid JSON ({err})") from err
    if not records:
        log.info("%s records no file checksums (older format): not verified", path)
        return
    problems = verify_records(path, records)
    if problems:
        raise PretrainedError(f"{path} is damaged: {problems[0]}"
                              + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""))


def _read_config(path: Path) -> DictConfig:
    file = path / CONFIG
    if not file.is_file():
        raise PretrainedError(f"{file} not found: the model's config is part of every export and checkpoint")
    try:
        cfg = OmegaConf.load(file)
    except Exception as err:  # noqa: BLE001 - yaml/omegaconf raise several types
        raise PretrainedError(f"{file} is not a readable config ({err})") from err
    if not isinstance(cfg, DictConfig):
        raise PretrainedError(f"{file} is not a config mapping")
    return cfg


def _model_groups(full: DictConfig) -> tuple[DictConfig, float | None]:
    """The model groups (and the training window) of a stored training/export config."""
    groups = {k: full[k] for k in (*PARTS, "diffusion") if full.get(k) is not None}
    window = OmegaConf.select(full, "dataset.window_seconds", default=None)
    return OmegaConf.create(groups), (float(window) if window is not None else None)


def _load_state(module: nn.Module, tensors: Mapping[str, torch.Tensor], what: str) -> None:
    missing, unexpected = module.load_state_dict(dict(tensors), strict=False)
    if missing or unexpected:
        raise PretrainedError(f"{what} does not match its config: missing keys {sorted(missing)[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}, unexpected keys {sorted(unexpected)[:8]}"
                              f"{' ...' if len(unexpected) > 8 else ''}")


def _read_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except Exception as err:  # noqa: BLE001 - safetensors raises SafetensorError / OSError
        raise PretrainedError(f"{file} cannot be read ({err}): the file is truncated or damaged") from err


def _prefixed(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


# ---------------------------------------------------------------- loaders per layout
def _weights_export(path: Path, parts: Iterable[str]) -> dict[str, dict[str, torch.Tensor]]:
    return {n: _read_safetensors(path / f"{n}.safetensors") for n in parts if (path / f"{n}.safetensors").is_file()}


def _weights_checkpoint(path: Path, parts: Iterable[str], use_ema: bool) -> dict[str, dict[str, torch.Tensor]]:
    tensors = _read_safetensors(path / WEIGHTS)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name in parts:
        if name == "dit" and use_ema and any(k.startswith("ema.module.") for k in tensors):
            out[name] = _prefixed(tensors, "ema.module.")
        elif any(k.startswith(f"{name}.") for k in tensors):
            out[name] = _prefixed(tensors, f"{name}.")
    return out


def _autoencoder_source(full: DictConfig, base: Path) -> Path | None:
    for key in AUTOENCODER_KEYS:
        value = full.get(key)
        if isinstance(value, str) and value:
            return resolve_recorded_path(value, base)
    return None


def load_pretrained(source: str | Path | None, *, autoencoder_from: str | Path | None = None,
                    adapters: Sequence[Any] = (), parts: Sequence[str] = PARTS, use_ema: bool = True,
                    fallback: DictConfig | None = None, verify: bool = True) -> Pretrained:
    """Build and load the requested parts of a trained model (see the module docstring).

    Args:
        source: export dir, ``checkpoints/step_*`` dir, SAT ``model.safetensors``/``.ckpt`` (or its dir);
            None builds the parts of ``fallback`` with random weights.
        autoencoder_from: take the autoencoder from this source instead (any kind).
        adapters: ``["path:scale", ...]`` or ``[(path, scale)]`` adapters stacked on the DiT.
        parts: which of ``autoencoder``, ``dit``, ``conditioner`` to build.
        use_ema: training checkpoints: the EMA DiT (else the raw one).
        fallback: model groups used when ``source`` is None.
        verify: check the recorded size and sha256 of every file first.

    Returns:
        A :class:`Pretrained` with modules in eval mode on the CPU.

    Raises:
        PretrainedError: missing/damaged/unsafe source, missing part, or weights that do not match.
    """
    parts = tuple(parts)
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown model parts {sorted(unknown)}; choose from {PARTS}")
    if source is None:
        if fallback is None:
            raise PretrainedError("no model source given (checkpoint=... / init_from=...)")
        groups, _ = _model_groups(fallback)
        pre = Pretrained(None, "random", groups, window_seconds=OmegaConf.select(fallback, "generator.window_seconds"))
        from hydra.utils import instantiate

        for name in parts:
            if name == "autoencoder" and autoencoder_from is not None:
                continue
            setattr(pre, name, instantiate(groups[name]).eval())
    else:
        kind, path = detect(source)
        if kind == "sat":
            pre = _load_sat(path, parts)
        else:
            if verify:
                _verify(path)
            full = _read_config(path)
            groups, window = _model_groups(full)
            check_targets(groups, str(path / CONFIG))
            pre = Pretrained(path, kind, groups, window_seconds=window)
            wanted = [n for n in parts if not (n == "autoencoder" and autoencoder_from is not None)]
            weights = (_weights_export(path, wanted) if kind == "export"
                       else _weights_checkpoint(path, wanted, use_ema))
            for name in wanted:
                if name not in weights:
                    if name == "autoencoder":
                        continue  # from the source recorded in the config, below
                    raise PretrainedError(f"{path} has no {name} weights (it holds {sorted(weights) or 'none'})")
                if groups.get(name) is None:
                    raise PretrainedError(f"{path / CONFIG} has no '{name}' group to build the {name} from")
                module = safe_instantiate(groups[name], str(path / CONFIG))
                _load_state(module, weights[name], f"{path}: {name}")
                setattr(pre, name, module.eval())
            if "autoencoder" in wanted and pre.autoencoder is None:
                recorded = _autoencoder_source(full, path)
                if recorded is None:
                    raise PretrainedError(f"{path} holds no autoencoder and its config names none; pass "
                                          f"autoencoder_from=<an export or checkpoint with the autoencoder>")
                autoencoder_from = recorded
    if "autoencoder" in parts and autoencoder_from is not None:
        ae = load_pretrained(autoencoder_from, parts=("autoencoder",), verify=verify)
        pre.autoencoder = ae.autoencoder
        with _open(pre.config):
            pre.config.autoencoder = ae.config.autoencoder
    if adapters:
        if pre.dit is None:
            raise PretrainedError("adapters need the DiT: include 'dit' in parts")
        from musicdiff.adapters import load_adapters, parse_adapter_specs

        specs = parse_adapter_specs(adapters)
        load_adapters(pre.dit, specs)
        pre.adapters = list(specs)
    return pre


def read_weights(source: str | Path, parts: Sequence[str] = PARTS, use_ema: bool = True,
                 verify: bool = True) -> tuple[DictConfig, dict[str, dict[str, torch.Tensor]]]:
    """The stored config and the raw per-part state dicts of an export or checkpoint (nothing built).

    Raises:
        PretrainedError: a SAT source (use :func:`load_pretrained`), a damaged file or a missing part.
    """
    kind, path = detect(source)
    if kind == "sat":
        raise PretrainedError(f"{path} is a stable-audio-tools checkpoint, not a musicdiff export")
    if verify:
        _verify(path)
    full = _read_config(path)
    weights = _weights_export(path, parts) if kind == "export" else _weights_checkpoint(path, parts, use_ema)
    missing = [n for n in parts if n not in weights]
    if missing:
        raise PretrainedError(f"{path} has no {', '.join(missing)} weights (it holds {sorted(weights) or 'none'})")
    return full, weights


def model_config(source: str | Path) -> DictConfig:
    """The model groups of ``source`` without building anything (cheap; checked against the allow-list)."""
    kind, path = detect(source)
    if kind == "sat":
        from musicdiff.reference.import_sat import sat_groups

        groups = OmegaConf.create(sat_groups(path))
        return OmegaConf.create({k: groups[k] for k in (*PARTS, "diffusion") if groups.get(k) is not None})
    groups, _ = _model_groups(_read_config(path))
    check_targets(groups, str(path / CONFIG))
    return groups


def _load_sat(path: Path, parts: Sequence[str]) -> Pretrained:
    from musicdiff.reference.import_sat import convert_sat

    config, tensors = convert_sat(path)
    # as if written and read back as an export: escaped ``\${oc.env:...}`` become live interpolations
    config = OmegaConf.create(OmegaConf.to_yaml(config, resolve=True))
    groups, window = _model_groups(config)
    pre = Pretrained(path, "sat", groups, window_seconds=window)
    for name in parts:
        module = safe_instantiate(groups[name], str(path.with_name(SAT_CONFIG)))
        _load_state(module, tensors[name], f"{path}: {name}")
        setattr(pre, name, module.eval())
    return pre


def _open(cfg: DictConfig):
    from omegaconf import open_dict

    return open_dict(cfg)
