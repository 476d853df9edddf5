"""Fold adapters into a plain export: ``python -m musicdiff.adapters.merge``.

Usage::

    python -m musicdiff.adapters.merge base=exports/stable-audio-open-1.0 \\
        adapters=outputs/sao_lora/<date>/export/adapter.safetensors:0.8,style.safetensors:0.5 out=exports/sao-my-style

``base`` is any source the loading layer opens (export, checkpoint, stable-audio-tools file); the
adapters are stacked with their scales as ``musicdiff-generate adapters=[...]`` does, folded into the
DiT's weights (``W + Σ s_i ΔW_i``, equal to the adapted model within 1e-5) and written with the
base's autoencoder and conditioner as an ordinary export, which needs no adapter code to load.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from musicdiff.reference.cli_args import parse_key_values

USAGE = "usage: python -m musicdiff.adapters.merge base=<model> adapters=<a.safetensors:scale>[,<b>:<scale>] out=<dir>"


def merge_to_export(base: str | Path, adapters: Sequence[str], out: str | Path) -> Path:
    """Load ``base`` with ``adapters``, fold them into the DiT and write a plain export to ``out``.

    Returns:
        The export directory.
    """
    from musicdiff.adapters.stack import merge_adapters
    from musicdiff.pretrained import load_pretrained, write_export

    pre = load_pretrained(base, adapters=list(adapters))
    pre.dit = merge_adapters(pre.dit)
    config = pre.config.copy()
    if pre.window_seconds is not None:
        config.dataset = {"window_seconds": pre.window_seconds}
    config.merged_adapters = [str(a) for a in adapters]
    return write_export(out, pre.modules(), config)


def main(argv: Sequence[str] | None = None) -> Path:
    """Command-line entry point (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_key_values(sys.argv[1:] if argv is None else argv, USAGE, {"base": None, "adapters": None, "out": None})
    if not args["base"] or not args["adapters"] or not args["out"]:
        raise SystemExit(USAGE)
    path = merge_to_export(args["base"], [a for a in args["adapters"].split(",") if a], args["out"])
    print(path)
    return path


if __name__ == "__main__":
    main()
