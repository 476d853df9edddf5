"""Export a musicdiff model back to a stable-audio-tools checkpoint (``model.safetensors`` + config).

Usage::

    python -m musicdiff.reference.export_sat in=exports/sao out=sat_export [t5_name=t5-base]

``in`` is a musicdiff export directory (from ``import_sat`` or ``musicdiff-train``) holding
``autoencoder``, ``dit`` and ``conditioner`` weights. The result loads into SAT's
``create_model_from_config(json.load(open("model_config.json")))`` with ``strict=True``. Only
SAT-expressible configurations export (T5/number conditioners, unmasked cross-attention, SAT's
rotary width); anything else raises :class:`~musicdiff.reference.sat_config.UnsupportedSATConfig`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

from musicdiff.reference import sat_config, sat_weights
from musicdiff.reference.cli_args import parse_key_values

log = logging.getLogger("musicdiff.reference")
USAGE = "usage: python -m musicdiff.reference.export_sat in=<musicdiff export dir> out=<dir> [t5_name=<SAT T5 name>]"


def export_sat(export_dir: str | Path, out: str | Path, t5_name: str | None = None) -> Path:
    """Write ``<out>/model.safetensors`` and ``<out>/model_config.json`` in SAT's format.

    Args:
        export_dir: musicdiff export directory.
        out: output directory (created).
        t5_name: SAT ``t5_model_name`` (default: inferred from the T5 conditioner's path).

    Returns:
        The output directory.
    """
    from musicdiff.pretrained import read_weights
    from musicdiff.training.checkpoint import state_dict_for_save, write_safetensors

    export_dir, out = Path(export_dir), Path(out)
    cfg, tensors = read_weights(export_dir, ("autoencoder", "dit", "conditioner"))
    model_config = sat_config.musicdiff_to_sat(OmegaConf.to_container(cfg, resolve=True), t5_name=t5_name)
    state = sat_weights.musicdiff_to_sat(tensors["autoencoder"], tensors["dit"], tensors["conditioner"])
    out.mkdir(parents=True, exist_ok=True)
    write_safetensors(out / "model.safetensors", state_dict_for_save(state))
    tmp = out / f".model_config.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(model_config, indent=4) + "\n")
    os.replace(tmp, out / "model_config.json")
    log.info("exported %s to %s", export_dir, out)
    return out


def main(argv: Sequence[str] | None = None) -> Path:
    """Command-line entry point (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_key_values(sys.argv[1:] if argv is None else argv, USAGE, {"in": None, "out": None, "t5_name": None})
    if not args["in"] or not args["out"]:
        raise SystemExit(USAGE)
    path = export_sat(args["in"], args["out"], t5_name=args["t5_name"] or None)
    print(path)
    return path


if __name__ == "__main__":
    main()
