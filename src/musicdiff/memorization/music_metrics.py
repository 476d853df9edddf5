"""Numbers from a real music model next to the replica detector of the memorization analysis.

The detector (``embedder=``, default the weight-free ``randconv``) is chosen for finding replicas;
on the planted-copy benchmark of docs/MEMORIZATION.md it finds more copies than musicnn does. Its
similarities say nothing about music, though. So the memorization run also embeds the training
set and the generations with a real pretrained music model (``music_embedder=``, default
musicnn) and reports, under ``memorization/<model>/``:

* ``fd``: Fréchet distance between the generations' and the training set's features (the SA2
  Table 2 FD with the training set as reference; the diagonal FD when a set has fewer items
  than dimensions, flagged by ``fd_diagonal``), see :class:`~musicdiff.evaluation.frechet.FrechetDistance`;
* ``kl_pooled``: ``KL(mean p_train || mean p_gen)`` of the model's tag distributions;
* ``<split>/max_nn_similarity`` and ``<split>/mean_nn_similarity``: nearest-neighbour cosine
  similarity to the training set in the model's feature space, per split;
* ``nn_agreement``: the fraction of generations whose nearest training item is the same for the
  detector and the music model.

Training-set features are cached under ``cache_dir`` by the hash of the music embedder's and the
dataset's configs and the files' names, sizes and modification times, so a rerun (new
generations, other report settings) does not embed the training set again.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from musicdiff.config.runtime import atomic_write_text
from musicdiff.evaluation.frechet import FrechetDistance
from musicdiff.evaluation.kl import PooledKLDivergence
from musicdiff.memorization.analysis import AudioItem, Match
from musicdiff.memorization.index import CosineIndex
from musicdiff.memorization.inputs import fingerprint

log = logging.getLogger("musicdiff.memorization")


def music_features(embedder: Any, items: Sequence[AudioItem], batch_size: int = 32) -> dict[str, np.ndarray]:
    """``{"features": [N, D], "tags": [N, K]}`` of ``items`` (``tags`` empty without a tag classifier).

    Items are loaded mono at the embedder's rate, in batches of ``batch_size``. Tags come from
    ``classify`` when the embedder has one and a label set (musicnn: its 50 tags; CLAP: only with
    ``labels``); musicnn computes features and tags in one pass (its outputs are memoised per waveform).
    """
    sr = int(embedder.sample_rate)
    tagger = hasattr(embedder, "classify") and bool(getattr(embedder, "labels", None))
    feats, tags = [], []
    for s in range(0, len(items), batch_size):
        audio = [it.load(sr, 1) for it in items[s:s + batch_size]]
        feats.append(np.asarray(embedder.embed_audio(audio, sr), np.float32))
        if tagger:
            tags.append(np.asarray(embedder.classify(audio, sr), np.float64))
    return {"features": np.concatenate(feats),
            "tags": np.concatenate(tags) if tags else np.zeros((len(items), 0))}


def cached_music_features(cache_dir: str | Path | None, key: str, items: Sequence[AudioItem],
                          compute: Callable[[], dict[str, np.ndarray]]) -> tuple[dict[str, np.ndarray], bool]:
    """Training-set features from ``<cache_dir>/music_<key>/features.npz`` if the files are unchanged.

    A folder of its own, apart from the detector's :class:`~musicdiff.memorization.inputs.EmbeddingCache`
    (which replaces its whole folder when it is rewritten).

    Returns:
        ``(features, cache hit)``; on a miss ``compute()`` runs and its result is stored atomically.
    """
    path = Path(cache_dir) / f"music_{key}" / "features.npz" if cache_dir else None
    stamp = fingerprint(items)
    if path is not None and path.is_file():
        with np.load(path) as data:
            if str(data["fingerprint"]) == stamp and len(data["features"]) == len(items):
                log.info("reusing music-model training features from %s", path)
                return {"features": data["features"], "tags": data["tags"]}, True
    out = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
        np.savez(tmp, fingerprint=np.array(stamp), **out)
        os.replace(tmp, path)
    return out, False


def music_metrics(train: dict[str, np.ndarray], gens: dict[str, np.ndarray], generation_items: Sequence[AudioItem],
                  ranking: Sequence[Match], prefix: str = "memorization/musicnn",
                  index_kwargs: dict[str, Any] | None = None) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The scalars of the module docstring and, per generation, its nearest training item in music space.

    Args:
        train: :func:`music_features` of the training items.
        gens: :func:`music_features` of the generations (same order as ``generation_items``).
        generation_items: the generations (their ``split``).
        ranking: the detector's ranking (for ``nn_agreement``).
        prefix: key prefix of the scalars.
        index_kwargs: options of :class:`~musicdiff.memorization.index.CosineIndex`.

    Returns:
        ``(scalars, per_generation)`` where ``per_generation[g] = {"similarity", "nearest"}``.
    """
    out: dict[str, float] = {}
    fd = FrechetDistance(None, name="fd").results(gens["features"], train["features"])
    out.update({f"{prefix}/{k}": float(v) for k, v in fd.items()})
    if train["tags"].shape[1] and gens["tags"].shape[1]:
        out[f"{prefix}/kl_pooled"] = PooledKLDivergence(None).from_probs(gens["tags"], train["tags"])
    index = CosineIndex(**(index_kwargs or {}))
    index.add(train["features"])
    sims, idx = index.search(gens["features"], 1)
    per_gen = [{"similarity": float(sims[g, 0]), "nearest": int(idx[g, 0])} for g in range(len(generation_items))]
    splits: dict[str, list[float]] = {"all": [p["similarity"] for p in per_gen]}
    for it, p in zip(generation_items, per_gen):
        if it.split:
            splits.setdefault(it.split, []).append(p["similarity"])
    for split, values in splits.items():
        out[f"{prefix}/{split}/max_nn_similarity"] = float(np.max(values))
        out[f"{prefix}/{split}/mean_nn_similarity"] = float(np.mean(values))
    agree = [m.neighbours[0] == per_gen[m.generation]["nearest"] for m in ranking]
    out[f"{prefix}/nn_agreement"] = float(np.mean(agree)) if agree else float("nan")
    return out, per_gen


def write_music_summary(path: Path, scalars: dict[str, float], per_gen: list[dict[str, Any]],
                        generation_items: Sequence[AudioItem], training_items: Sequence[AudioItem]) -> None:
    """``music_metrics.json``: the scalars and each generation's nearest training item in music space."""
    atomic_write_text(path, json.dumps({"metrics": scalars, "generations": [
        {"name": it.name, "split": it.split, "similarity": p["similarity"],
         "nearest": training_items[p["nearest"]].name} for it, p in zip(generation_items, per_gen)]}, indent=1))
