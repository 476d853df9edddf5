"""Long-form metrics: quality along a track and repetition within it (SA2 generates up to 4m45s).

SA2 Table 2 scores whole tracks; it cannot say whether a 4m45s generation degrades late in the
track or loops. With an embedder that embeds fixed windows (musicnn: 3 s patches), this metric
reports, for window position ``k`` (time ``k * window``),

* ``<name>_fd_w<k>``: Fréchet distance between the k-th windows of all generated tracks and the
  pool of all reference windows (small sets fall back to the diagonal FD, see
  :class:`~musicdiff.evaluation.frechet.FrechetDistance`), and ``<name>_fd_slope``: the
  least-squares slope of those FDs per minute (> 0: quality falls off later in the track);
* ``<name>_repetition``: mean over tracks and windows of the highest cosine similarity between a
  window and any non-adjacent window of the same track (self-similarity; 1 = exact loops), and
  ``<name>_repetition_ref`` for the reference tracks (what "normal" repetition looks like);
  ``<name>_repetition_w<k>``: the same for the k-th window alone, averaged over generated tracks
  (where along the track the loops are).

With a CLAP model (``clap``, an embedder with ``embed_text``) and prompts, it also reports the CLAP
score along the track (SA2 Table 2's text-audio agreement, per window):

* ``<name>_clap_w<k>``: mean over generated tracks of the cosine between the CLAP audio embedding of
  the k-th window ``[k w, (k + 1) w)`` of the track (``w = window_seconds``; a trailing partial window
  is dropped, a track shorter than ``w`` is one window) and the CLAP text embedding of its prompt,
  i.e. :class:`~musicdiff.evaluation.clap_score.CLAPScore` on the window's audio slice with the
  embedder's preprocessing (``conf/metrics/longform_clap.yaml``: stable-audio-metrics' peak -1 dBFS,
  int16 round trip, mono mix, repeat-padding to CLAP's 10 s); ``<name>_clap``: the mean over all
  windows, and ``<name>_clap_slope``: its least-squares slope per minute (< 0: the music drifts away
  from the prompt later in the track).

:func:`window_curves` turns the ``_w<k>`` keys into curves over ``k`` (``musicdiff-evaluate``
logs each as one MLflow metric with ``step = k`` and plots them).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from musicdiff.evaluation.clap_score import cosine_rows, lookup_prompts
from musicdiff.evaluation.embedders import AudioSet
from musicdiff.evaluation.frechet import FrechetDistance

log = logging.getLogger("musicdiff.evaluation")


_WINDOW_KEY = re.compile(r"^(?P<curve>.+)_w(?P<k>\d+)$")


def window_repetition(windows: np.ndarray, min_gap: int = 2) -> np.ndarray | None:
    """Per window, the max cosine similarity to a window ``>= min_gap`` positions away (``[P]``).

    Args:
        windows: one track's window embeddings ``[P, D]`` in time order.
        min_gap: smallest index distance compared (2 skips the overlapping neighbours).

    Returns:
        The scores, or ``None`` when the track has no pair of windows ``min_gap`` apart.
    """
    x = np.asarray(windows, np.float64)
    if len(x) <= min_gap:
        return None
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    sim = x @ x.T
    idx = np.arange(len(x))
    sim[np.abs(idx[:, None] - idx[None]) < min_gap] = -np.inf
    return sim.max(1)


def repetition(windows: np.ndarray, min_gap: int = 2) -> float | None:
    """Mean of :func:`window_repetition` over a track's windows (``None`` for too short tracks)."""
    per_window = window_repetition(windows, min_gap)
    return None if per_window is None else float(per_window.mean())


def window_curves(results: Mapping[str, float], names: Sequence[str] | None = None
                  ) -> dict[str, list[tuple[int, float]]]:
    """``{"<curve>": [(k, value), ...]}`` from the ``<curve>_w<k>`` keys of ``results``, ``k`` ascending.

    Args:
        results: metric results (e.g. of :class:`LongformMetrics`).
        names: keep only keys that start with ``<name>_`` for one of these metric names (``None``: all).
    """
    curves: dict[str, list[tuple[int, float]]] = {}
    for key, value in results.items():
        m = _WINDOW_KEY.match(key)
        if m and (names is None or any(key.startswith(f"{n}_") for n in names)):
            curves.setdefault(m["curve"], []).append((int(m["k"]), float(value)))
    return {c: sorted(points) for c, points in curves.items()}


def audio_windows(audio: torch.Tensor, window: int) -> list[torch.Tensor]:
    """Consecutive ``[C, window]`` slices of ``[C, T]`` audio (partial tail dropped; ``T < window``: the whole)."""
    count = max(audio.shape[-1] // window, 1)
    return [audio[..., k * window:(k + 1) * window] for k in range(count)]


class LongformMetrics:
    """Per-window FD and CLAP score along generated tracks, and self-similarity (see the module docstring).

    Args:
        embedder: an embedder with ``patch_outputs(audio, sample_rate) -> [{"penultimate": [P, D]}]``
            (:class:`~musicdiff.evaluation.musicnn.MusicnnEmbedder`, 3 s windows).
        name: prefix of the result keys.
        window_seconds: duration of one embedder window (for the slope's time axis; also the CLAP window).
        min_tracks: fewest generated tracks reaching a position for its FD (and CLAP score) to be reported.
        clap: optional CLAP embedder (``embed_audio`` and ``embed_text``, e.g.
            :class:`~musicdiff.evaluation.embedders.ClapEmbedder`) for the per-window CLAP score; used
            when prompts are given.
    """

    requires = ("reference",)

    def __init__(self, embedder: Any, name: str = "longform", window_seconds: float = 3.0, min_tracks: int = 2,
                 clap: Any = None) -> None:
        if not hasattr(embedder, "patch_outputs"):
            raise ValueError(f"LongformMetrics needs an embedder with patch_outputs (e.g. MusicnnEmbedder); "
                             f"got {type(embedder).__name__}")
        if window_seconds <= 0 or min_tracks < 2:
            raise ValueError("LongformMetrics: need window_seconds > 0 and min_tracks >= 2")
        if clap is not None and not hasattr(clap, "embed_text"):
            raise ValueError(f"LongformMetrics: clap needs an embedder with embed_text (a CLAP text tower); "
                             f"got {type(clap).__name__}")
        self.embedder, self.name, self.window_seconds, self.min_tracks = embedder, name, window_seconds, min_tracks
        self.clap = clap
        self._fd = FrechetDistance(None, name=name)

    def clap_windows(self, audio: Sequence[torch.Tensor], texts: Sequence[str], sample_rate: int) -> list[np.ndarray]:
        """Per track, the CLAP score of each window against the track's text (``[P_i]`` each, time order).

        Args:
            audio: tracks ``[C, T]`` at ``sample_rate``.
            texts: one prompt per track.
            sample_rate: rate of ``audio`` in Hz.
        """
        if len(audio) != len(texts):
            raise ValueError(f"{self.name}: {len(audio)} tracks but {len(texts)} prompts")
        window = max(int(round(self.window_seconds * sample_rate)), 1)
        per_track = [audio_windows(torch.as_tensor(a), window) for a in audio]
        audio_emb = np.asarray(self.clap.embed_audio([w for ws in per_track for w in ws], sample_rate))
        text_emb = np.asarray(self.clap.embed_text(list(texts)))
        owner = np.repeat(np.arange(len(per_track)), [len(ws) for ws in per_track])
        cos = cosine_rows(audio_emb, text_emb[owner])
        return np.split(cos, np.cumsum([len(ws) for ws in per_track])[:-1])

    def _clap_results(self, scores: list[np.ndarray]) -> dict[str, float]:
        """``<name>_clap_w<k>``, ``<name>_clap`` and ``<name>_clap_slope`` from per-track window scores."""
        out: dict[str, float] = {}
        need = min(self.min_tracks, len(scores))  # a single prompted track still gets its curve
        positions, means = [], []
        for k in range(max((len(s) for s in scores), default=0)):
            at_k = [s[k] for s in scores if len(s) > k]
            if len(at_k) < need:
                break
            out[f"{self.name}_clap_w{k}"] = float(np.mean(at_k))
            positions.append(k * self.window_seconds / 60.0)
            means.append(out[f"{self.name}_clap_w{k}"])
        if scores:
            out[f"{self.name}_clap"] = float(np.concatenate(scores).mean())
        if len(means) >= 2:
            out[f"{self.name}_clap_slope"] = float(np.polyfit(positions, means, 1)[0])
        return out

    def from_windows(self, generated: list[np.ndarray], reference: list[np.ndarray],
                     clap_scores: list[np.ndarray] | None = None) -> dict[str, float]:
        """Metrics from per-track window embeddings (each ``[P_i, D]``, time order).

        Args:
            generated: window embeddings of the generated tracks.
            reference: window embeddings of the reference tracks.
            clap_scores: optional per-track window CLAP scores (:meth:`clap_windows`) for the ``_clap`` keys.
        """
        pool = np.concatenate(reference)
        out: dict[str, float] = {}
        positions, fds = [], []
        for k in range(max(len(g) for g in generated)):
            at_k = np.stack([g[k] for g in generated if len(g) > k])
            if len(at_k) < self.min_tracks:
                break
            res = self._fd.results(at_k, pool) if len(pool) >= 2 else None
            if res is None:
                break
            out[f"{self.name}_fd_w{k}"] = res[self.name]
            positions.append(k * self.window_seconds / 60.0)
            fds.append(res[self.name])
        if len(fds) >= 2:
            out[f"{self.name}_fd_slope"] = float(np.polyfit(positions, fds, 1)[0])
        for key, tracks in (("repetition", generated), ("repetition_ref", reference)):
            scores = [s for s in (repetition(t) for t in tracks) if s is not None]
            if scores:
                out[f"{self.name}_{key}"] = float(np.mean(scores))
        per_track = [r for r in (window_repetition(g) for g in generated) if r is not None]
        for k in range(max((len(r) for r in per_track), default=0)):
            at_k = [r[k] for r in per_track if len(r) > k]
            if len(at_k) < self.min_tracks:
                break
            out[f"{self.name}_repetition_w{k}"] = float(np.mean(at_k))
        if clap_scores:
            out.update(self._clap_results(clap_scores))
        return out

    def _prompted_clap(self, generated: AudioSet, prompts: dict[str, str] | None) -> list[np.ndarray] | None:
        """Window CLAP scores of the generated tracks that have a prompt (``None``: no CLAP or no prompts)."""
        if self.clap is None:
            return None
        found = lookup_prompts(generated.names, prompts or {})
        keep = [i for i, p in enumerate(found) if p is not None]
        if not keep:
            log.warning("%s: a CLAP model is configured but no generated track has a prompt (prompts=... or the "
                        "folder's generations.jsonl); per-window CLAP score skipped", self.name)
            return None
        if len(keep) < len(generated):
            log.warning("%s: %d of %d generated tracks have no prompt and get no CLAP score",
                        self.name, len(generated) - len(keep), len(generated))
        return self.clap_windows([generated.audio[i] for i in keep], [found[i] for i in keep], generated.sample_rate)

    def evaluate(self, generated: AudioSet, reference: AudioSet | None = None,
                 prompts: dict[str, str] | None = None, **_: Any) -> dict[str, float]:
        """Window FDs, their slope per minute, repetition scores and (with ``clap`` and prompts) window CLAP scores."""
        if reference is None:
            raise ValueError(f"metric {self.name!r} (long-form) needs reference audio")
        gen = [o["penultimate"] for o in self.embedder.patch_outputs(generated.audio, generated.sample_rate)]
        ref = [o["penultimate"] for o in self.embedder.patch_outputs(reference.audio, reference.sample_rate)]
        return self.from_windows(gen, ref, self._prompted_clap(generated, prompts))
