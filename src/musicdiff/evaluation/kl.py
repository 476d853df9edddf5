"""KL divergence between classifier label distributions (KL_passt of SA2 Table 2).

Paired convention (PaSST-KL as in AudioLDM-eval / stable-audio-metrics): every generated item
is paired with the reference item of the same id (the file name; a regex can extract the id
from generated names like ``0042_take1.wav``), and the metric is the mean over pairs of

    KL(p_ref || p_gen) = sum_k p_ref[k] (log p_ref[k] - log p_gen[k]).

stable-audio-metrics computes the opposite direction for KL_passt (SA2 Table 2): its
``F.kl_div((p_ref + 1e-6).log(), p_gen, reduction="sum")`` is ``KL(p_gen || p_ref)``; select it
with ``direction="gen_ref"`` (conf/metrics/sa2_protocol.yaml does).

The pooled variant compares the mean label distributions of the two sets and needs no pairing
(e.g. when another system's outputs have no relation to the reference files).
"""

from __future__ import annotations

import logging
import re
from pathlib import PurePath
from typing import Any, Sequence

import numpy as np

from musicdiff.evaluation.bootstrap import bootstrap_ci, with_interval
from musicdiff.evaluation.embedders import AudioSet

log = logging.getLogger("musicdiff.evaluation")


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Row-wise ``KL(p || q)`` of distributions ``[N, K]`` (rows renormalised after ``+eps``)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"KL divergence: distributions must both be [N, K], got {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any() or not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ValueError("KL divergence: distributions must be finite and non-negative")
    p = (p + eps) / (p + eps).sum(1, keepdims=True)
    q = (q + eps) / (q + eps).sum(1, keepdims=True)
    return (p * (np.log(p) - np.log(q))).sum(1)


def pair_ids(generated: Sequence[str], reference: Sequence[str], id_pattern: str | None = None
             ) -> list[tuple[int, int]]:
    """Pairs ``(generated index, reference index)`` whose ids match.

    The id of a name is its stem (file name without directories and extension); with
    ``id_pattern`` it is the first group (or whole match) of ``re.search`` on the stem.
    """
    regex = re.compile(id_pattern) if id_pattern else None

    def key(name: str) -> str | None:
        stem = PurePath(name).stem
        if regex is None:
            return stem
        m = regex.search(stem)
        return (m.group(1) if m.groups() else m.group(0)) if m else None

    ref_index: dict[str, int] = {}
    for j, name in enumerate(reference):
        k = key(name)
        if k is not None:
            if k in ref_index:
                raise ValueError(f"KL divergence: reference id {k!r} occurs twice ({reference[ref_index[k]]}, {name})")
            ref_index[k] = j
    pairs = [(i, ref_index[k]) for i, name in enumerate(generated) if (k := key(name)) in ref_index]
    return pairs


class KLDivergence:
    """Mean paired ``KL(p_ref || p_gen)`` of a classifier's label distributions.

    Args:
        classifier: object with ``classify(audio, sample_rate) -> [N, K]`` probabilities
            (e.g. :class:`~musicdiff.evaluation.embedders.RandomConvEmbedder`, or a zero-shot
            :class:`~musicdiff.evaluation.embedders.ClapEmbedder` with labels).
        name: key of the result.
        pairing: ``"id"`` (match names, see :func:`pair_ids`) or ``"order"`` (i-th with i-th).
        id_pattern: optional regex extracting the id from a name.
        eps: smoothing added before the logs.
        bootstrap: resamples of the pairs for a confidence interval (``<name>_ci_low/_ci_high``); 0 = none.
        confidence: two-sided level of the interval.
        seed: seed of the bootstrap resampling.
        direction: ``"ref_gen"`` for ``KL(p_ref || p_gen)`` or ``"gen_ref"`` for ``KL(p_gen || p_ref)``
            (stable-audio-metrics' KL_passt).
    """

    requires = ("reference",)

    def __init__(self, classifier: Any, name: str = "kl", pairing: str = "id", id_pattern: str | None = None,
                 eps: float = 1e-8, bootstrap: int = 0, confidence: float = 0.95, seed: int = 0,
                 direction: str = "ref_gen") -> None:
        if pairing not in ("id", "order"):
            raise ValueError(f"KLDivergence: pairing must be 'id' or 'order', got {pairing!r}")
        if direction not in ("ref_gen", "gen_ref"):
            raise ValueError(f"KLDivergence: direction must be 'ref_gen' or 'gen_ref', got {direction!r}")
        self.direction = direction
        self.classifier, self.name, self.pairing, self.id_pattern, self.eps = classifier, name, pairing, id_pattern, eps
        self.bootstrap, self.confidence, self.seed = int(bootstrap), float(confidence), int(seed)

    def from_probs(self, generated: np.ndarray, reference: np.ndarray,
                   pairs: Sequence[tuple[int, int]] | None = None) -> float:
        """Mean KL over ``pairs`` (default: row i with row i)."""
        return float(self.pair_kls(generated, reference, pairs).mean())

    def pair_kls(self, generated: np.ndarray, reference: np.ndarray,
                 pairs: Sequence[tuple[int, int]] | None = None) -> np.ndarray:
        """``KL(p_ref || p_gen)`` of every pair ``[P]`` (default pairs: row i with row i)."""
        g, r = np.asarray(generated), np.asarray(reference)
        if pairs is None:
            if len(g) != len(r):
                raise ValueError(f"KL divergence: {len(g)} generated vs {len(r)} reference items; pass pairs")
            pairs = [(i, i) for i in range(len(g))]
        if not pairs:
            raise ValueError("KL divergence: no generated item could be paired with a reference item")
        gi, ri = np.array(pairs).T
        if self.direction == "gen_ref":
            return kl_divergence(g[gi], r[ri], self.eps)
        return kl_divergence(r[ri], g[gi], self.eps)

    def evaluate(self, generated: AudioSet, reference: AudioSet | None = None,
                 prompts: dict[str, str] | None = None, **_: Any) -> dict[str, float]:
        """``{name: mean KL}`` over paired items."""
        if reference is None:
            raise ValueError(f"metric {self.name!r} (paired KL) needs reference audio")
        if self.pairing == "order":
            if len(generated) != len(reference):
                raise ValueError(f"metric {self.name!r}: pairing='order' needs equal counts, got "
                                 f"{len(generated)} generated and {len(reference)} reference items")
            pairs = [(i, i) for i in range(len(generated))]
        else:
            pairs = pair_ids(generated.names, reference.names, self.id_pattern)
            if not pairs:
                raise ValueError(f"metric {self.name!r}: no generated file name matches a reference file name "
                                 f"(e.g. {generated.names[:2]} vs {reference.names[:2]}); set id_pattern, "
                                 f"pairing='order', or use the pooled KL")
            if len(pairs) < len(generated):
                log.warning("%s: %d of %d generated items have no reference with the same id and are ignored",
                            self.name, len(generated) - len(pairs), len(generated))
        kls = self.pair_kls(generated.classify(self.classifier), reference.classify(self.classifier), pairs)
        interval = bootstrap_ci(lambda i: float(kls[i].mean()), (len(kls),), self.bootstrap, self.confidence,
                                self.seed) if self.bootstrap else None
        return with_interval(self.name, float(kls.mean()), interval)


class PooledKLDivergence:
    """``KL(mean p_ref || mean p_gen)``: label histograms of the two sets, no pairing needed.

    Args:
        classifier: as for :class:`KLDivergence`.
        name: key of the result.
        eps: smoothing added before the logs.
        bootstrap: resamples (both sets, independently) for a confidence interval; 0 = none.
        confidence: two-sided level of the interval.
        seed: seed of the bootstrap resampling.
    """

    requires = ("reference",)

    def __init__(self, classifier: Any, name: str = "kl_pooled", eps: float = 1e-8, bootstrap: int = 0,
                 confidence: float = 0.95, seed: int = 0) -> None:
        self.classifier, self.name, self.eps = classifier, name, eps
        self.bootstrap, self.confidence, self.seed = int(bootstrap), float(confidence), int(seed)

    def from_probs(self, generated: np.ndarray, reference: np.ndarray) -> float:
        """KL between the column means of ``reference`` and ``generated`` probabilities."""
        g, r = np.asarray(generated, np.float64), np.asarray(reference, np.float64)
        if len(g) == 0 or len(r) == 0:
            raise ValueError("pooled KL divergence: both sets must be non-empty")
        return float(kl_divergence(r.mean(0, keepdims=True), g.mean(0, keepdims=True), self.eps)[0])

    def evaluate(self, generated: AudioSet, reference: AudioSet | None = None,
                 prompts: dict[str, str] | None = None, **_: Any) -> dict[str, float]:
        if reference is None:
            raise ValueError(f"metric {self.name!r} (pooled KL) needs reference audio")
        g, r = generated.classify(self.classifier), reference.classify(self.classifier)
        interval = bootstrap_ci(lambda i, j: self.from_probs(g[i], r[j]), (len(g), len(r)), self.bootstrap,
                                self.confidence, self.seed) if self.bootstrap else None
        return with_interval(self.name, self.from_probs(g, r), interval)
