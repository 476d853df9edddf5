"""Inputs of the ``musicdiff-memorization`` entry point (SA2 §4.5).

* :func:`training_items`: the training set as :class:`AudioItem` files with their captions, from
  the :meth:`~musicdiff.data.base.FileDataset.source_files` of a configured dataset (for latent
  shards: the source audio files recorded in the shards' index are embedded, not decoded latents).
* :func:`folder_items`: a folder of already generated audio, with prompts and splits from its
  ``generations.jsonl`` (written by ``musicdiff-generate`` and by this entry point) or a prompts file.
* :class:`EmbeddingCache`: training-set embeddings stored under a hash of the embedder and
  dataset configs plus a fingerprint of the files, so a rerun skips the most expensive step.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from musicdiff.config.hashing import config_hash, to_plain
from musicdiff.memorization.analysis import AudioItem
from musicdiff.sampling.outputs import GENERATIONS_MANIFEST

log = logging.getLogger("musicdiff.memorization")

MANIFEST = GENERATIONS_MANIFEST  # per-file records: path, prompt, seed, split (musicdiff.sampling.outputs)
_EMBEDDER_RUNTIME_KEYS = ("device", "batch_size")  # do not change the embeddings


def _prompt(builder: Any, metadata: Mapping[str, Any], idx: int, seed: int) -> str | None:
    """The item's caption, else a field prompt drawn with a per-item seed (deterministic)."""
    caption = builder.caption(metadata)
    if caption:
        return caption
    return builder(metadata, random.Random(f"{seed}-{idx}")) or None


def training_items(dataset: Any, seed: int = 0) -> tuple[list[AudioItem], Counter]:
    """The training files of ``dataset`` as items (name = path relative to the audio root).

    Args:
        dataset: a :class:`~musicdiff.data.base.FileDataset` (any ``conf/dataset`` option whose audio
            is stored as files: audio folder, synthetic, latent shards).
        seed: seed of field prompts for items without a caption.

    Returns:
        ``(items, {reason: skipped count})``: files the dataset already rejected (unreadable,
        silent, ...) and source files that no longer exist (``missing_audio``, e.g. audio deleted
        after encoding it into latents).

    Raises:
        TypeError: ``dataset`` is not a FileDataset, or its audio is not stored as files.
    """
    from musicdiff.data.base import FileDataset

    if not isinstance(dataset, FileDataset):
        raise TypeError(f"memorization needs a dataset of conf/dataset (a musicdiff.data.base.FileDataset), "
                        f"got {type(dataset).__name__}")
    skipped: Counter = Counter(dict(dataset.skipped))
    items: list[AudioItem] = []
    missing = []
    for i, source in enumerate(dataset.source_files()):
        if not Path(source.path).is_file():
            missing.append(str(source.path))
            continue
        items.append(AudioItem(source.name, _prompt(dataset.prompt_builder, source.metadata, i, seed),
                               path=str(source.path)))
    if missing:
        skipped["missing_audio"] += len(missing)
        log.warning("%d training items have no source audio any more (e.g. %s); skipped", len(missing), missing[0])
    if not items:
        raise ValueError(f"no training audio to analyse (skipped {dict(skipped)})")
    return items, skipped


def read_generation_manifest(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Records of ``folder/generations.jsonl`` keyed by their ``path`` (relative to the folder)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return {}
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            rec = json.loads(line)
            if "path" not in rec:
                raise ValueError(f"{path}:{n}: record without 'path'")
            out[Path(rec["path"]).as_posix()] = rec
    return out


def folder_items(folder: str | Path, prompts: str | Path | None = None,
                 split_of: Callable[[str | None], str | None] | None = None) -> list[AudioItem]:
    """Items for every audio file under ``folder`` (recursive; unreadable files are skipped later).

    Args:
        folder: generated audio (any system).
        prompts: prompts keyed by file name (see :func:`musicdiff.evaluation.folder_eval.read_prompts`);
            default the folder's ``generations.jsonl``.
        split_of: maps a prompt to ``in_distribution`` / ``out_of_distribution`` / ``None`` for files
            whose record has no ``split``.
    """
    from musicdiff.evaluation.folder_eval import list_audio_files, read_prompts

    root = Path(folder)
    files = list_audio_files(root)
    if not files:
        raise ValueError(f"no audio files in generated_dir={root}")
    records = read_generation_manifest(root)
    extra = read_prompts(prompts) if prompts else {}
    items = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        rec = records.get(rel) or records.get(f.name) or {}
        prompt = next((extra[k] for k in (rel, rel.rsplit(".", 1)[0], f.stem) if k in extra), rec.get("prompt"))
        split = rec.get("split") or (split_of(prompt) if split_of is not None else None)
        items.append(AudioItem(rel, prompt, path=str(f), split=split))
    return items


def embedding_key(embedder_cfg: Any, dataset_cfg: Any) -> str:
    """Config hash of the embedder and the dataset (runtime-only embedder keys excluded)."""
    embedder = dict(to_plain(embedder_cfg) or {})
    for k in _EMBEDDER_RUNTIME_KEYS:
        embedder.pop(k, None)
    return config_hash({"embedder": embedder, "dataset": to_plain(dataset_cfg)})


def fingerprint(items: Sequence[AudioItem]) -> str:
    """Hash of the items' names, sizes and modification times (detects changed files)."""
    h = hashlib.sha256()
    for it in items:
        st = os.stat(it.path) if it.path else None
        h.update(f"{it.name}\0{st.st_size if st else -1}\0{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:16]


class EmbeddingCache:
    """Normalised training embeddings in ``<root>/<key>/`` (``embeddings.npy`` + ``items.json``).

    Args:
        root: cache directory shared by runs (e.g. ``outputs/data/memorization``).
        key: :func:`embedding_key` of the embedder and dataset configs.
    """

    def __init__(self, root: str | Path, key: str) -> None:
        self.dir = Path(root) / key
        self.key = key

    @property
    def embeddings_path(self) -> Path:
        return self.dir / "embeddings.npy"

    def load(self, items: Sequence[AudioItem]) -> tuple[np.ndarray, list[int], dict[str, int]] | None:
        """``(embeddings, kept item indices, skipped counts)`` if cached for exactly these files."""
        meta_path = self.dir / "items.json"
        if not meta_path.is_file() or not self.embeddings_path.is_file():
            return None
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("fingerprint") != fingerprint(items):
            log.info("embedding cache %s is stale (training files changed); recomputing", self.dir)
            return None
        emb = np.load(self.embeddings_path, mmap_mode="r")
        if emb.shape[0] != len(meta["kept"]):
            return None
        log.info("reusing training embeddings from %s", self.dir)
        return emb, [int(i) for i in meta["kept"]], dict(meta.get("skipped", {}))

    def save(self, items: Sequence[AudioItem], embeddings: np.ndarray, kept: Sequence[int],
             skipped: Mapping[str, int], config: Mapping[str, Any] | None = None) -> Path:
        """Store unit-norm float32 embeddings (atomically: a temp dir renamed into place)."""
        emb = np.asarray(embeddings, dtype=np.float32)
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        tmp = self.dir.with_name(f".{self.key}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / "embeddings.npy", emb)
        (tmp / "items.json").write_text(json.dumps({
            "key": self.key, "fingerprint": fingerprint(items), "kept": list(map(int, kept)),
            "names": [items[i].name for i in kept], "skipped": dict(skipped), "config": config or {},
        }, indent=1), encoding="utf-8")
        if self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=True)
        try:
            os.replace(tmp, self.dir)
        except OSError:  # another run wrote it first
            shutil.rmtree(tmp, ignore_errors=True)
        return self.dir


def link_or_copy(src: str | Path, dst: str | Path) -> Path:
    """Hard-link ``src`` to ``dst`` (copy across file systems); replaces ``dst``."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst
