"""CLAP score: text-audio agreement of generations with their prompts (SA2 Table 2, "CLAP").

For each generated item with a prompt, the cosine similarity between the CLAP text embedding
of the prompt and the CLAP audio embedding of the audio; the score is the mean over items
(Wu et al. 2023; SA2 §4.1 reports it with a CLAP model trained on music).
"""

from __future__ import annotations

import logging
from pathlib import PurePath
from typing import Any, Sequence

import numpy as np

from musicdiff.evaluation.bootstrap import bootstrap_ci, with_interval
from musicdiff.evaluation.embedders import AudioSet

log = logging.getLogger("musicdiff.evaluation")


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of ``[N, D]`` arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"cosine: shapes must both be [N, D], got {a.shape} and {b.shape}")
    na = np.linalg.norm(a, axis=1).clip(1e-12)
    nb = np.linalg.norm(b, axis=1).clip(1e-12)
    return (a * b).sum(1) / (na * nb)


def lookup_prompts(names: Sequence[str], prompts: dict[str, str]) -> list[str | None]:
    """Prompt of each name, matched by the exact name, then the path without extension, then the stem."""
    out = []
    for name in names:
        p = PurePath(name)
        out.append(prompts.get(name, prompts.get(str(p.with_suffix("")), prompts.get(p.stem))))
    return out


class CLAPScore:
    """Mean cosine between CLAP text embeddings of prompts and audio embeddings.

    Args:
        embedder: an embedder with ``embed_audio`` and ``embed_text`` (``ClapEmbedder``).
        name: key of the result.
        bootstrap: resamples of the (audio, prompt) pairs for a confidence interval; 0 = none.
        confidence: two-sided level of the interval.
        seed: seed of the bootstrap resampling.
    """

    requires = ("prompts",)

    def __init__(self, embedder: Any, name: str = "clap_score", bootstrap: int = 0, confidence: float = 0.95,
                 seed: int = 0) -> None:
        if not hasattr(embedder, "embed_text"):
            raise ValueError(f"CLAPScore needs an embedder with embed_text (a text tower); got {type(embedder).__name__}")
        self.embedder, self.name = embedder, name
        self.bootstrap, self.confidence, self.seed = int(bootstrap), float(confidence), int(seed)

    def from_embeddings(self, audio_emb: np.ndarray, text_emb: np.ndarray) -> float:
        """Mean row-wise cosine of paired audio and text embeddings."""
        if len(audio_emb) == 0:
            raise ValueError("CLAP score: no (audio, prompt) pairs")
        return float(cosine_rows(audio_emb, text_emb).mean())

    def score(self, audio: Sequence, texts: Sequence[str], sample_rate: int | None = None) -> float:
        """CLAP score of waveforms ``[C, T]`` against their texts (same order)."""
        if len(audio) != len(texts):
            raise ValueError(f"CLAP score: {len(audio)} waveforms but {len(texts)} texts")
        return self.from_embeddings(self.embedder.embed_audio(list(audio), sample_rate),
                                    self.embedder.embed_text(list(texts)))

    def evaluate(self, generated: AudioSet, reference: AudioSet | None = None,
                 prompts: dict[str, str] | None = None, **_: Any) -> dict[str, float]:
        """``{name: score}`` over the generated items that have a prompt."""
        if not prompts:
            raise ValueError(f"metric {self.name!r} (CLAP score) needs prompts")
        found = lookup_prompts(generated.names, prompts)
        keep = [i for i, p in enumerate(found) if p is not None]
        if not keep:
            raise ValueError(f"metric {self.name!r}: no generated file has a prompt "
                             f"(e.g. {generated.names[:2]} vs prompt keys {list(prompts)[:2]})")
        if len(keep) < len(generated):
            log.warning("%s: %d of %d generated items have no prompt and are ignored",
                        self.name, len(generated) - len(keep), len(generated))
        audio_emb = generated.embed(self.embedder)[keep]
        text_emb = np.asarray(self.embedder.embed_text([found[i] for i in keep]))
        cos = cosine_rows(audio_emb, text_emb)
        interval = bootstrap_ci(lambda i: float(cos[i].mean()), (len(cos),), self.bootstrap, self.confidence,
                                self.seed) if self.bootstrap else None
        return with_interval(self.name, self.from_embeddings(audio_emb, text_emb), interval)
