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


class _MeanStd:  # patch_outputs on 1 s windows: mean and std of each window (cheap stand-in for musicnn)
    def patch_outputs(self, audio, sample_rate=None):
        out = []
        for a in audio:
            w = a.mean(0)[: len(a[0]) // sample_rate * sample_rate].reshape(-1, sample_rate)
            out.append({"penultimate": torch.stack([w.mean(1), w.std(1)], 1).numpy()})
        return out


def test_window_clap_score_is_the_clap_score_of_each_window_slice(tiny_clap_dir, caplog):
    """Per-window CLAP score == CLAPScore on each window's audio slice (tiny random CLAP, SA2 preprocessing)."""
    from musicdiff.evaluation import CLAPScore, ClapEmbedder

    sr, t = 16000, torch.arange(16000) / 16000
    gen = []
    for i in range(3):  # windows A A B + a 0.5 s tail (dropped): a sine twice, then noise
        tone = 0.5 * torch.sin(2 * torch.pi * (220.0 * (i + 1)) * t)
        noise = 0.3 * torch.randn(16000, generator=torch.Generator().manual_seed(i))
        gen.append(torch.cat([tone, tone, noise, tone[:8000]])[None].repeat(2, 1))
    prompts = {"a": "a happy piano melody", "b": "sad violin with drums"}  # c has no prompt: left out
    clap = ClapEmbedder(tiny_clap_dir, long_audio="reference", peak_db=-1.0, quantize_int16=True, text_max_length=77)
    metric = LongformMetrics(_MeanStd(), window_seconds=1.0, clap=clap)
    names = ["a", "b", "c"]
    res = metric.evaluate(AudioSet(gen, names, sr), AudioSet(gen, names, sr), prompts)
    assert "1 of 3 generated tracks have no prompt" in caplog.text
    direct = [CLAPScore(clap).score([g[:, k * sr:(k + 1) * sr] for g in gen[:2]], list(prompts.values()), sr)
              for k in range(3)]
    assert [res[f"longform_clap_w{k}"] for k in range(3)] == pytest.approx(direct, abs=1e-6)
    assert "longform_clap_w3" not in res  # the 0.5 s tail is no window
    per_track = metric.clap_windows(gen[:2], list(prompts.values()), sr)
    for scores in per_track:  # identical windows score identically, a different window differently
        assert scores[0] == pytest.approx(scores[1], abs=1e-7) and abs(scores[2] - scores[0]) > 1e-4
    assert res["longform_clap"] == pytest.approx(np.mean(np.concatenate(per_track)))
    assert res["longform_clap_slope"] == pytest.approx(np.polyfit(np.arange(3) / 60, direct, 1)[0])
    assert [k for k, _ in window_curves(res, ["longform"])["longform_clap"]] == [0, 1, 2]
    assert "longform_clap_w0" not in metric.evaluate(AudioSet(gen, names, sr), AudioSet(gen, names, sr), None)
    with pytest.raises(ValueError, match="embed_text"):
        LongformMetrics(_MeanStd(), clap=MelStatsEmbedder())
