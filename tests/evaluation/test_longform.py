"""Long-form metrics: per-window FD along tracks, its slope, and self-similarity repetition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.evaluation import AudioSet, LongformMetrics, MelStatsEmbedder
from musicdiff.evaluation.longform import repetition, window_curves
from tests.evaluation.musicnn_clips import SR, musicnn_clips


class _Windows:  # patch_outputs from given window embeddings
    def patch_outputs(self, audio, sample_rate=None):
        return [{"penultimate": a} for a in audio]


def test_window_fd_rises_when_tracks_drift_and_loops_score_one():
    rng = np.random.default_rng(0)
    ref = [rng.standard_normal((6, 3)) for _ in range(20)]
    drifting = [rng.standard_normal((6, 3)) + np.arange(6)[:, None] * 0.5 for _ in range(20)]
    out = LongformMetrics(_Windows(), name="lf", window_seconds=10.0).from_windows(drifting, ref)
    fds = [out[f"lf_fd_w{k}"] for k in range(6)]
    assert fds[0] < 0.5 and all(b > a for a, b in zip(fds, fds[1:]))
    assert out["lf_fd_slope"] == pytest.approx(np.polyfit(np.arange(6) / 6, fds, 1)[0])
    steady = LongformMetrics(_Windows(), name="lf").from_windows(ref[:10], ref[10:])
    assert abs(steady["lf_fd_slope"]) < 0.2 * out["lf_fd_slope"]
    loop = np.tile(rng.standard_normal((2, 8)), (4, 1))  # A B A B ... : an exact loop
    assert repetition(loop) == pytest.approx(1.0) and repetition(rng.standard_normal((8, 8))) < 0.9
    assert repetition(loop[:2]) is None
    assert out["lf_repetition"] < 0.99 and "lf_repetition_ref" in out
    # per-window repetition (the curve musicdiff-evaluate logs): a track that loops from window 2 on
    tracks = [np.concatenate([rng.standard_normal((2, 8)), np.tile(rng.standard_normal((2, 8)), (2, 1))])
              for _ in range(3)]
    looped = LongformMetrics(_Windows(), name="lf").from_windows(tracks, [rng.standard_normal((6, 8))
                                                                          for _ in range(9)])
    reps = [looped[f"lf_repetition_w{k}"] for k in range(6)]
    assert reps[2:] == pytest.approx([1.0] * 4) and max(reps[:2]) < 0.9
    curves = window_curves({**looped, "other_w0": 1.0}, ["lf"])
    assert set(curves) == {"lf_fd", "lf_repetition"} and [k for k, _ in curves["lf_repetition"]] == list(range(6))
    assert curves["lf_fd"] == [(k, looped[f"lf_fd_w{k}"]) for k in range(6)]


def test_musicnn_longform_on_audio():
    """A track that turns from the reference's chord into drums: its late windows score worse."""
    clips = musicnn_clips()
    chord, drums = clips["chord"][:96000], clips["drums"][:96000]  # two 3 s windows each
    gen = [torch.from_numpy(np.concatenate([np.roll(chord, 4000 * i), np.roll(drums, 4000 * i)]))[None]
           for i in range(3)]
    ref = [torch.from_numpy(np.roll(chord, 3000 * i))[None] for i in range(3)]
    metric = instantiate(OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "metrics" / "longform.yaml"))
    res = metric.metrics[0].evaluate(AudioSet(gen, ["a", "b", "c"], SR), AudioSet(ref, ["a", "b", "c"], SR))
    assert res["longform_fd_w3"] > 3 * res["longform_fd_w0"] and res["longform_fd_slope"] > 0
    with pytest.raises(ValueError, match="patch_outputs"):
        LongformMetrics(MelStatsEmbedder())
