"""Convert an audio folder (with its manifest or ``<name>.json`` sidecars) into WebDataset audio shards.

Usage::

    python -m musicdiff.data.make_shards in=/data/music out=/data/shards/music shard_size=256
    python -m musicdiff.data.make_shards in=/data/music out=/data/shards/music manifest=captions.csv validate=false

Each usable file becomes one sample of ``out/audio-NNNNNN.tar``: ``<key>.<ext>`` holds the file's
bytes unchanged (flac stays flac; decoding, resampling and cropping happen at training time) and
``<key>.json`` its metadata (manifest entry or sidecar: ``caption``, tags ...) plus ``path``, the
file's path relative to ``in``. Keys are sequence numbers (``%08d``), since WebDataset keys must
not contain dots. ``out/shards.json`` lists the shards with their sample counts (the training
dataset then needs no counting pass) and the skip counts. Files the folder dataset would skip
(unreadable, empty, silent, too short, broken sidecar) are skipped, logged and counted the same
way. Every shard is written under a temporary name and renamed; ``out`` must not hold shards yet.
Train from the result with ``dataset=webdataset dataset.urls=/data/shards/music``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from musicdiff.data.audio_dataset import AudioFolderDataset
from musicdiff.data.webdataset_io import FORMAT, SHARDS_INDEX, write_tar

log = logging.getLogger("musicdiff.data")


def make_shards(src: str | Path, out: str | Path, shard_size: int = 256, manifest: str | None = None,
                validate: bool = True, progress: bool = True, prefix: str = "audio") -> dict[str, Any]:
    """Write the usable files of audio folder ``src`` as WebDataset shards into ``out``.

    Args:
        src: audio folder (recursive), as for :class:`~musicdiff.data.audio_dataset.AudioFolderDataset`.
        out: output directory (created; must not contain ``shards.json`` yet).
        shard_size: samples per shard.
        manifest: metadata file (default: ``metadata.{json,jsonl,csv}`` in ``src``, else sidecars).
        validate: decode every file first and skip broken ones (else headers only).
        progress: show a progress bar.
        prefix: shard file name prefix.

    Returns:
        ``{"samples", "shards", "skipped": {reason: count}, "index": path of shards.json}``.

    Raises:
        FileExistsError: ``out`` already holds a shard index.
        ValueError: ``shard_size`` < 1, or no usable audio in ``src``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out = Path(out).expanduser()
    if (out / SHARDS_INDEX).exists():
        raise FileExistsError(f"{out / SHARDS_INDEX} exists: write the shards into a new directory")
    folder = AudioFolderDataset(src, sample_rate=44100, channels=2, window_seconds=1.0, manifest=manifest,
                                random_crop=False, validate=validate, skip_silent=validate)
    out.mkdir(parents=True, exist_ok=True)
    index: dict[str, Any] = {"format": FORMAT, "kind": "audio", "source": str(folder.root), "shards": [],
                             "skipped": dict(folder.skipped)}
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        if batch:
            name = f"{prefix}-{len(index['shards']):06d}.tar"
            write_tar(out / name, batch)
            index["shards"].append({"url": name, "num_samples": len(batch)})
            batch.clear()
        tmp = out / (SHARDS_INDEX + ".tmp")
        tmp.write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, out / SHARDS_INDEX)

    done = 0
    for i in tqdm(range(len(folder)), disable=not progress, desc="shards", unit="file", dynamic_ncols=True):
        path = folder.files[i]
        try:
            data = path.read_bytes()
        except OSError as e:
            index["skipped"]["unreadable"] = index["skipped"].get("unreadable", 0) + 1
            log.warning("skipping %s: %s", path, e)
            continue
        meta = {**folder.metadata(i), "path": folder.relpath(i)}
        batch.append({"__key__": f"{done:08d}", path.suffix.lower().lstrip("."): data,
                      "json": json.dumps(meta, sort_keys=True).encode("utf-8")})
        done += 1
        if len(batch) >= shard_size:
            flush()
    flush()
    log.info("wrote %d samples in %d shards to %s; skipped %s", done, len(index["shards"]), out, index["skipped"])
    return {"samples": done, "shards": len(index["shards"]), "skipped": index["skipped"],
            "index": str(out / SHARDS_INDEX)}


def _parse(argv: Sequence[str]) -> dict[str, Any]:
    allowed = {"in", "out", "shard_size", "manifest", "validate", "progress", "prefix"}
    args: dict[str, Any] = {}
    for token in argv:
        key, sep, value = token.partition("=")
        if not sep or key not in allowed:
            raise SystemExit(f"make_shards: expected key=value with key in {sorted(allowed)}, got {token!r}")
        args[key] = value
    if "in" not in args or "out" not in args:
        raise SystemExit("make_shards: in=<audio folder> and out=<shard directory> are required")
    for key in ("validate", "progress"):
        if key in args:
            if args[key].lower() not in ("true", "false"):
                raise SystemExit(f"make_shards: {key} must be true or false, got {args[key]!r}")
            args[key] = args[key].lower() == "true"
    if "shard_size" in args:
        try:
            args["shard_size"] = int(args["shard_size"])
        except ValueError:
            raise SystemExit(f"make_shards: shard_size must be a whole number, got {args['shard_size']!r}") from None
    args["src"] = args.pop("in")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m musicdiff.data.make_shards in=DIR out=DIR [shard_size=256] ...``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    return make_shards(**_parse(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
