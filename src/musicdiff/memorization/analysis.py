"""End-to-end memorization analysis (SA2 §4.5).

1. Embed every training item with an audio embedder (CLAP audio tower in SA2).
2. Find repeated training items (pairs above a similarity threshold, union-find groups).
3. Embed generations from in-distribution prompts (the prompts of repeated training items, the
   most likely to be memorised) and out-of-distribution prompts (e.g. Song Describer).
4. Rank generations by their nearest-neighbour similarity to the training set and keep the
   ``k`` closest training items of each.
5. Write the listening report (HTML) and log the summary and report to the experiment tracker.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from musicdiff.memorization.index import CosineIndex
from musicdiff.memorization.repeats import RepeatGroups, find_repeats

log = logging.getLogger("musicdiff.memorization")

IN_DISTRIBUTION = "in_distribution"
OUT_OF_DISTRIBUTION = "out_of_distribution"


@dataclass
class AudioItem:
    """A training item or a generation: audio in memory or a file, with its prompt.

    Args:
        name: identifier shown in the report (file name, dataset key...).
        prompt: text prompt or caption.
        path: audio file (read when ``audio`` is ``None``).
        audio: waveform ``[C, T]``.
        sample_rate: rate of ``audio``.
        split: for generations, ``in_distribution`` or ``out_of_distribution``.
    """

    name: str
    prompt: str | None = None
    path: str | None = None
    audio: torch.Tensor | None = field(default=None, repr=False)
    sample_rate: int | None = None
    split: str | None = None

    def __post_init__(self) -> None:
        if self.audio is None and self.path is None:
            raise ValueError(f"AudioItem {self.name!r}: needs audio or a path")
        if self.audio is not None and not self.sample_rate:
            raise ValueError(f"AudioItem {self.name!r}: in-memory audio needs a sample_rate")

    def load(self, sample_rate: int, channels: int = 2) -> torch.Tensor:
        """The waveform ``[channels, T]`` at ``sample_rate``."""
        from musicdiff.evaluation.embedders import resample

        if self.audio is None:
            from musicdiff.evaluation.folder_eval import load_audio_file

            return load_audio_file(self.path, sample_rate, channels)
        a = self.audio.detach().float().cpu()
        a = a[None] if a.dim() == 1 else a
        if a.shape[0] != channels:
            a = a.mean(0, keepdim=True) if channels == 1 else a[:1].repeat(channels, 1) if a.shape[0] == 1 else a[:channels]
        return resample(a, int(self.sample_rate), sample_rate)


@dataclass
class Match:
    """One ranked generation and its closest training items (best first)."""

    generation: int
    name: str
    prompt: str | None
    split: str | None
    neighbours: list[int]
    similarities: list[float]

    @property
    def top_similarity(self) -> float:
        return self.similarities[0]


@dataclass
class MemorizationResult:
    """Output of :func:`run_memorization_analysis`."""

    ranking: list[Match]
    repeats: RepeatGroups
    summary: dict[str, float]
    report_path: Path | None = None


def embed_items(embedder: Any, items: Sequence[AudioItem], batch_size: int = 32, channels: int = 2,
                progress: bool = False, desc: str = "embed") -> np.ndarray:
    """Embed items in batches (loading files lazily) at the embedder's rate; ``[N, D]`` float32."""
    if not items:
        raise ValueError("embed_items: no items")
    sr = int(embedder.sample_rate)
    out = []
    with tqdm(total=len(items), desc=desc, unit="item", disable=not progress, dynamic_ncols=True) as bar:
        for s in range(0, len(items), batch_size):
            audio = [it.load(sr, channels) for it in items[s:s + batch_size]]
            out.append(np.asarray(embedder.embed_audio(audio, sr), dtype=np.float32))
            bar.update(len(audio))
    return np.concatenate(out)


def embed_readable_items(embedder: Any, items: Sequence[AudioItem], batch_size: int = 32, channels: int = 2,
                         progress: bool = False, desc: str = "embed") -> tuple[np.ndarray, list[int], Counter]:
    """Like :func:`embed_items`, but items whose audio cannot be loaded are skipped and counted.

    Returns:
        ``(embeddings [M, D], indices of the M embedded items, {reason: skipped count})``; the
        reasons are those of :class:`~musicdiff.data.audio_io.AudioLoadError` (``unreadable``,
        ``empty``, ``non_finite`` ...).
    """
    from musicdiff.data.audio_io import AudioLoadError

    sr = int(embedder.sample_rate)
    out, kept, skipped = [], [], Counter()
    with tqdm(total=len(items), desc=desc, unit="item", disable=not progress, dynamic_ncols=True) as bar:
        for s in range(0, len(items), batch_size):
            audio, idx = [], []
            for i in range(s, min(s + batch_size, len(items))):
                try:
                    audio.append(items[i].load(sr, channels))
                    idx.append(i)
                except AudioLoadError as e:
                    skipped[e.reason] += 1
                    log.warning("skipping %s: %s", items[i].name, e)
            if audio:
                out.append(np.asarray(embedder.embed_audio(audio, sr), dtype=np.float32))
                kept += idx
            bar.update(min(batch_size, len(items) - s))
    if not out:
        raise ValueError(f"no readable audio among {len(items)} items (skipped {dict(skipped)})")
    return np.concatenate(out), kept, skipped


def in_distribution_prompts(training_items: Sequence[AudioItem], repeats: RepeatGroups,
                            max_prompts: int | None = None, fill: bool = False, seed: int = 0) -> list[str]:
    """Prompts of repeated training items (one per group, then the rest), SA2's in-distribution set.

    Args:
        training_items: the training items (their ``prompt`` is the caption).
        repeats: repeated-item groups from :func:`~musicdiff.memorization.repeats.find_repeats`.
        max_prompts: keep at most this many (``None``: all).
        fill: after the repeated items' prompts, add the prompts of the other training items
            (in a ``seed``-ed random order) up to ``max_prompts``, so a training set with few
            repeats still yields a full in-distribution set.
        seed: order of the fill prompts.
    """
    firsts = [g[0] for g in repeats.groups]
    rest = [i for g in repeats.groups for i in g[1:]]
    order = firsts + rest
    if fill:
        others = [i for i in range(len(training_items)) if i not in repeats.group_of]
        random.Random(seed).shuffle(others)
        order += others
    prompts, seen = [], set()
    for i in order:
        p = training_items[i].prompt
        if p and p not in seen:
            seen.add(p)
            prompts.append(p)
            if max_prompts and len(prompts) >= max_prompts:
                break
    return prompts


def generate_items(prompts: Sequence[str], split: str, generate_fn: Callable[[list[str]], Sequence[torch.Tensor]],
                   sample_rate: int, batch_size: int = 8, prefix: str | None = None) -> list[AudioItem]:
    """Generate one clip per prompt with ``generate_fn(prompts) -> [C, T] waveforms``."""
    items = []
    for s in range(0, len(prompts), batch_size):
        chunk = list(prompts[s:s + batch_size])
        audio = generate_fn(chunk)
        if len(audio) != len(chunk):
            raise ValueError(f"generate_fn returned {len(audio)} clips for {len(chunk)} prompts")
        for j, (p, a) in enumerate(zip(chunk, audio)):
            items.append(AudioItem(f"{prefix or split}_{s + j:05d}", p, audio=a, sample_rate=sample_rate, split=split))
    return items


def rank_generations(index: CosineIndex, generation_embeddings: np.ndarray, generation_items: Sequence[AudioItem],
                     k: int = 3) -> list[Match]:
    """Generations sorted by nearest-neighbour similarity to the training set (highest first)."""
    sims, idx = index.search(generation_embeddings, k)
    matches = [Match(g, it.name, it.prompt, it.split, idx[g].tolist(), [float(s) for s in sims[g]])
               for g, it in enumerate(generation_items)]
    return sorted(matches, key=lambda m: (-m.top_similarity, m.generation))


def summarize(ranking: Sequence[Match], repeats: RepeatGroups, threshold: float) -> dict[str, float]:
    """Scalars: nearest-neighbour similarity statistics overall and per split, repeat counts."""
    out = dict(repeats.summary())
    splits = {"all": list(ranking)}
    for m in ranking:
        if m.split:
            splits.setdefault(m.split, []).append(m)
    for split, ms in splits.items():
        top = np.array([m.top_similarity for m in ms])
        out[f"memorization/{split}/max_nn_similarity"] = float(top.max())
        out[f"memorization/{split}/mean_nn_similarity"] = float(top.mean())
        out[f"memorization/{split}/num_above_threshold"] = float((top >= threshold).sum())
        out[f"memorization/{split}/num_generations"] = float(len(ms))
    return out


def run_memorization_analysis(embedder: Any, training_items: Sequence[AudioItem],
                              generation_items: Sequence[AudioItem], out_dir: str | Path, k: int = 3,
                              top_n: int = 50, repeat_threshold: float = 0.95, repeat_k: int = 16,
                              training_embeddings: np.ndarray | str | Path | None = None,
                              index_kwargs: dict[str, Any] | None = None, report: bool = True,
                              embed_media: bool | None = None, report_sample_rate: int = 24000,
                              max_report_seconds: float = 30.0, batch_size: int = 32,
                              logger: Any = None, repeats: RepeatGroups | None = None,
                              generation_embeddings: np.ndarray | None = None,
                              embeddings_dir: str | Path | None = None, save_training_embeddings: bool = True,
                              progress: bool = False,
                              extra_metrics: Callable[[list[Match]], dict[str, float]] | None = None
                              ) -> MemorizationResult:
    """Run the SA2 §4.5 analysis and write ``out_dir/index.html`` plus embeddings and a ranking.

    Args:
        embedder: audio embedder (``sample_rate``, ``embed_audio``), e.g. ``ClapEmbedder``.
        training_items: the training set (files are read lazily, in batches).
        generation_items: generations, each with ``split`` set to in/out-of-distribution.
        out_dir: output directory (created).
        k: closest training items kept per generation.
        top_n: generations shown in the report.
        repeat_threshold: cosine similarity at which two items count as replicas.
        repeat_k: neighbours examined per training item when finding repeats.
        training_embeddings: precomputed ``[N, D]`` training embeddings (array or ``.npy``), e.g.
            from a previous run at 10^6 scale; otherwise they are computed and saved.
        index_kwargs: options of :class:`CosineIndex` (device, dtype, block sizes, backend).
        report: write the HTML report.
        embed_media: embed audio/images in the HTML (``None``: only for small reports).
        report_sample_rate: rate of the audio written to the report.
        max_report_seconds: clips in the report are cut to this length.
        batch_size: items per embedding batch.
        logger: a ``musicdiff.tracking`` ``RunLogger`` (metrics and ``out_dir`` as artifacts).
        repeats: precomputed repeat groups of the training set (else found here).
        generation_embeddings: precomputed ``[M, D]`` generation embeddings (else computed).
        embeddings_dir: where the ``.npy`` embeddings go (default ``out_dir``; keep them out of
            ``out_dir`` when that is logged and the training set is large).
        save_training_embeddings: write ``train_embeddings.npy`` (off when they are cached elsewhere).
        progress: progress bars while embedding.
        extra_metrics: ``ranking -> {key: value}`` merged into the summary before the report is
            written (e.g. the music-model numbers of :mod:`musicdiff.memorization.music_metrics`).

    Returns:
        The :class:`MemorizationResult`.
    """
    if not training_items or not generation_items:
        raise ValueError("memorization analysis needs at least one training item and one generation")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    emb_dir = Path(embeddings_dir) if embeddings_dir is not None else out
    emb_dir.mkdir(parents=True, exist_ok=True)
    if training_embeddings is None:
        train_emb = embed_items(embedder, training_items, batch_size, progress=progress, desc="embed training set")
    elif isinstance(training_embeddings, (str, Path)):
        if not Path(training_embeddings).is_file():
            raise FileNotFoundError(f"training embeddings not found: {training_embeddings}")
        train_emb = np.load(training_embeddings)
    else:
        train_emb = np.asarray(training_embeddings, dtype=np.float32)
    if len(train_emb) != len(training_items):
        raise ValueError(f"{len(train_emb)} training embeddings for {len(training_items)} training items")
    index = CosineIndex(**(index_kwargs or {}))
    index.add(train_emb)
    if save_training_embeddings:
        index.save(emb_dir / "train_embeddings.npy")
    if repeats is None:
        repeats = find_repeats(index, repeat_threshold, repeat_k)
    elif repeats.num_items != len(training_items):
        raise ValueError(f"repeats cover {repeats.num_items} items, the training set has {len(training_items)}")
    if generation_embeddings is None:
        gen_emb = embed_items(embedder, generation_items, batch_size, progress=progress, desc="embed generations")
    else:
        gen_emb = np.asarray(generation_embeddings, dtype=np.float32)
        if len(gen_emb) != len(generation_items):
            raise ValueError(f"{len(gen_emb)} generation embeddings for {len(generation_items)} generations")
    np.save(emb_dir / "generation_embeddings.npy", gen_emb)
    ranking = rank_generations(index, gen_emb, generation_items, k)
    summary = summarize(ranking, repeats, repeat_threshold)
    if extra_metrics is not None:
        summary.update(extra_metrics(ranking))
    (out / "ranking.json").write_text(json.dumps({
        "summary": summary, "threshold": repeat_threshold,
        "ranking": [asdict(m) | {"neighbour_names": [training_items[i].name for i in m.neighbours]} for m in ranking],
        "repeat_groups": [[training_items[i].name for i in g] for g in repeats.groups],
    }, indent=1))
    result = MemorizationResult(ranking, repeats, summary)
    if report:
        from musicdiff.memorization.report import write_report

        result.report_path = write_report(result, training_items, generation_items, out, top_n=top_n,
                                          embed_media=embed_media, sample_rate=report_sample_rate,
                                          max_seconds=max_report_seconds, threshold=repeat_threshold)
    if logger is not None:
        logger.log_metrics(summary, step=0)
        logger.log_artifact(out, "memorization")
    log.info("memorization analysis: %s", {k_: round(v, 4) for k_, v in summary.items()})
    return result
