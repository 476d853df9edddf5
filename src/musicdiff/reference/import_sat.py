"""Import a stable-audio-tools checkpoint (e.g. Stable Audio Open 1.0) as a musicdiff export dir.

Usage::

    python -m musicdiff.reference.import_sat in=stable-audio-open-1.0/model.safetensors out=exports/sao
    python -m musicdiff.reference.import_sat in=model.ckpt config=model_config.json out=exports/sao \\
        t5=/models/t5-base
    musicdiff-generate checkpoint=exports/sao prompt="128 BPM tech house drum loop" duration=10

``in`` is ``model.safetensors`` or a ``.ckpt`` (``torch.load(weights_only=True)``; a SAT
training-wrapper checkpoint works too, ``ema=true`` takes its EMA DiT); ``config`` defaults to
the ``model_config.json`` beside it. The output is the directory ``musicdiff-train`` exports
(``autoencoder/dit/conditioner.safetensors`` + ``config.yaml``), so ``musicdiff-generate``,
``musicdiff-encode`` and ``init_autoencoder=`` use it directly. ``t5`` writes a local T5
directory into the config; without it the T5 encoder is read at generation time from
``$MUSICDIFF_T5_PATH`` or the local Hugging Face cache (nothing is ever downloaded).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from musicdiff.reference import sat_config, sat_weights
from musicdiff.reference.cli_args import parse_bool, parse_key_values

log = logging.getLogger("musicdiff.reference")
MODULES = ("autoencoder", "dit", "conditioner")
USAGE = ("usage: python -m musicdiff.reference.import_sat in=<model.safetensors|model.ckpt> out=<export dir> "
         "[config=<model_config.json>] [t5=<local T5 dir>] [ema=false]")


def check_against_config(name: str, node: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> bool:
    """Build ``node`` on the meta device and check ``tensors`` match its state dict (keys and shapes).

    Args:
        name: module name for messages.
        node: the module's config (``_target_`` node).
        tensors: converted weights.

    Returns:
        True when checked; False when the module cannot be built here (e.g. the T5 encoder it
        wraps is not available locally), in which case loading at generation time checks it.

    Raises:
        sat_weights.SATKeyError: keys or shapes differ.
    """
    from hydra.utils import instantiate

    try:
        with torch.device("meta"):
            module = instantiate(node)
    except Exception as err:  # hydra wraps the target's error in an InstantiationException
        cause = err if isinstance(err, FileNotFoundError) else err.__cause__
        if not isinstance(cause, FileNotFoundError):
            raise
        log.warning("%s not checked before writing (%s); it is checked when the export is loaded", name, cause)
        return False
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    missing, unexpected = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    shapes = [k for k in set(expected) & set(got) if expected[k] != got[k]]
    if missing or unexpected or shapes:
        raise sat_weights.SATKeyError(
            f"{name}: converted weights do not match the config: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, shape mismatches {[(k, got[k], expected[k]) for k in shapes[:5]]}")
    return True


def _read_model_config(checkpoint: Path, model_config: str | Path | Mapping[str, Any] | None) -> Mapping[str, Any]:
    if model_config is None:
        model_config = checkpoint.with_name("model_config.json")
    if isinstance(model_config, Mapping):
        return model_config
    try:
        return json.loads(Path(model_config).read_text())
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{model_config} not found: a stable-audio-tools checkpoint needs its "
                                f"model_config.json (pass config=<path>)") from err
    except ValueError as err:
        raise sat_config.UnsupportedSATConfig(f"{model_config} is not valid JSON ({err})") from err


def sat_groups(checkpoint: str | Path, model_config: str | Path | Mapping[str, Any] | None = None,
               t5_path: str | None = None) -> dict[str, Any]:
    """musicdiff's config (model groups + ``dataset.window_seconds``) of a SAT checkpoint, without weights."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint} not found: expected a stable-audio-tools model.safetensors or .ckpt")
    model_config = _read_model_config(checkpoint, model_config)
    groups = sat_config.sat_to_musicdiff(model_config, t5_path=t5_path)
    return {
        **{k: groups[k] for k in (*MODULES, "diffusion", "dataset")},
        "reference": {
            "source": "stable-audio-tools",
            "checkpoint": str(checkpoint.resolve()),
            "model_config": {k: model_config[k] for k in ("model_type", "sample_size", "sample_rate",
                                                          "audio_channels", "model") if k in model_config},
        },
    }


def convert_sat(checkpoint: str | Path, model_config: str | Path | Mapping[str, Any] | None = None,
                t5_path: str | None = None, ema: bool = False) -> tuple[Any, dict[str, dict[str, torch.Tensor]]]:
    """A SAT checkpoint as musicdiff's config and per-part state dicts (in memory; checked against the config).

    Args:
        checkpoint: ``model.safetensors`` or ``.ckpt``.
        model_config: ``model_config.json`` path or parsed dict; default: beside ``checkpoint``.
        t5_path: local T5 directory to write into the conditioner config.
        ema: take the EMA DiT of a SAT training-wrapper checkpoint.

    Returns:
        ``(config, {"autoencoder": ..., "dit": ..., "conditioner": ...})``.
    """
    checkpoint = Path(checkpoint)
    groups = sat_groups(checkpoint, model_config, t5_path)
    groups["reference"]["ema"] = bool(ema)
    tensors = sat_weights.sat_to_musicdiff(sat_weights.read_sat_checkpoint(checkpoint, ema=ema))
    for name in MODULES:
        check_against_config(name, groups[name], tensors[name])
    config = OmegaConf.create(groups)
    return config, tensors


def import_sat(checkpoint: str | Path, out: str | Path, model_config: str | Path | Mapping[str, Any] | None = None,
               t5_path: str | None = None, ema: bool = False) -> Path:
    """Convert a SAT checkpoint + ``model_config.json`` into a musicdiff export directory.

    Args:
        checkpoint: ``model.safetensors`` or ``.ckpt``.
        out: export directory to write (replaced atomically if it exists).
        model_config: ``model_config.json`` path or parsed dict; default: beside ``checkpoint``.
        t5_path: local T5 directory to write into the conditioner config.
        ema: take the EMA DiT of a SAT training-wrapper checkpoint.

    Returns:
        The export directory.
    """
    from musicdiff.pretrained import write_export

    config, tensors = convert_sat(checkpoint, model_config, t5_path, ema)
    path = write_export(out, {name: tensors[name] for name in MODULES}, config=config)
    log.info("imported %s into %s", checkpoint, path)
    return path


def main(argv: Sequence[str] | None = None) -> Path:
    """Command-line entry point (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_key_values(sys.argv[1:] if argv is None else argv, USAGE,
                            {"in": None, "out": None, "config": None, "t5": None, "ema": "false"})
    if not args["in"] or not args["out"]:
        raise SystemExit(USAGE)
    path = import_sat(args["in"], args["out"], model_config=args["config"], t5_path=args["t5"] or None,
                      ema=parse_bool(args["ema"]))
    print(path)
    return path


if __name__ == "__main__":
    main()
