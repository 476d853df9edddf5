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

:func:`window_curves` turns the ``_w<k>`` keys into curves over ``k`` (``musicdiff-evaluate``
logs each as one MLflow metric with ``step = k`` and plots them).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping, Sequence

import numpy as np

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


class LongformMetrics:
    """Per-window FD along generated tracks and self-similarity (see the module docstring).

    Args:
        embedder: an embedder with ``patch_outputs(audio, sample_rate) -> [{"penultimate": [P, D]}]``
            (:class:`~musicdiff.evaluation.musicnn.MusicnnEmbedder`, 3 s windows).
        name: prefix of the result keys.
        window_seconds: duration of one embedder window (for the slope's time axis).
        min_tracks: fewest generated tracks reaching a position for its FD to be reported.
    """

    requires = ("reference",)

    def __init__(self, embedder: Any, name: str = "longform", window_seconds: float = 3.0, min_tracks: int = 2) -> None:
        if not hasattr(embedder, "patch_outputs"):
            raise ValueError(f"LongformMetrics needs an embedder with patch_outputs (e.g. MusicnnEmbedder); "
                             f"got {type(embedder).__name__}")
        if window_seconds <= 0 or min_tracks < 2:
            raise ValueError("LongformMetrics: need window_seconds > 0 and min_tracks >= 2")
        self.embedder, self.name, self.window_seconds, self.min_tracks = embedder, name, window_seconds, min_tracks
        self._fd = FrechetDistance(None, name=name)

    def from_windows(self, generated: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
        """Metrics from per-track window embeddings (each ``[P_i, D]``, time order)."""
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
        return out

    def evaluate(self, generated: AudioSet, reference: AudioSet | None = None,
                 prompts: dict[str, str] | None = None, **_: Any) -> dict[str, float]:
        """Window FDs, their slope per minute and repetition scores of two audio sets."""
        if reference is None:
            raise ValueError(f"metric {self.name!r} (long-form) needs reference audio")
        gen = [o["penultimate"] for o in self.embedder.patch_outputs(generated.audio, generated.sample_rate)]
        ref = [o["penultimate"] for o in self.embedder.patch_outputs(reference.audio, reference.sample_rate)]
        return self.from_windows(gen, ref)
