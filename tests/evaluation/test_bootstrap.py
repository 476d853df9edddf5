"""Bootstrap intervals and the small-sample rule of the Fréchet distance."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from musicdiff.evaluation import AudioSet, CLAPScore, FrechetDistance, KLDivergence, PooledKLDivergence
from musicdiff.evaluation.bootstrap import bootstrap_ci
from musicdiff.evaluation.frechet import _fd_symmetric, diagonal_frechet_distance


def test_interval_of_a_mean_matches_the_normal_approximation():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=400)
    low, high = bootstrap_ci(lambda i: float(x[i].mean()), (len(x),), 1000, 0.95, seed=1)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))  # closed form of the 95% interval of a mean
    assert low == pytest.approx(x.mean() - half, abs=0.25 * half)
    assert high == pytest.approx(x.mean() + half, abs=0.25 * half)
    assert bootstrap_ci(lambda i: float(x[i].mean()), (len(x),), 1000, 0.95, seed=1) == (low, high)  # seeded
    assert np.isnan(bootstrap_ci(lambda i: 0.0, (1,), 10)[0])


def test_fd_interval_covers_the_population_value_and_shrinks_with_n():
    """Two Gaussians with a known FD (closed form for diagonal covariances)."""
    rng = np.random.default_rng(0)
    d, true_fd = 4, 4 * (0.5 ** 2) + 4 * (1.0 - 1.5) ** 2
    widths = []
    for n in (60, 600):
        g, r = rng.normal(0.5, 1.0, (n, d)), rng.normal(0.0, 1.5, (n, d))
        res = FrechetDistance(None, name="fd", bootstrap=300).results(g, r)
        assert res["fd_diagonal"] == 0.0 and res["fd_ci_low"] <= res["fd"] <= res["fd_ci_high"]
        assert res["fd_ci_low"] < true_fd < res["fd_ci_high"]
        widths.append(res["fd_ci_high"] - res["fd_ci_low"])
    assert widths[1] < 0.6 * widths[0]  # ~1/sqrt(n)


def test_symmetric_fd_equals_the_sqrtm_formula():
    rng = np.random.default_rng(1)
    g, r = rng.standard_normal((50, 8)), rng.standard_normal((40, 8)) @ rng.standard_normal((8, 8))
    assert _fd_symmetric(g, r) == pytest.approx(FrechetDistance(None).from_embeddings(g, r), rel=1e-8)


def test_too_few_samples_for_the_dimension(caplog):
    rng = np.random.default_rng(2)
    g, r = rng.standard_normal((4, 192)), rng.standard_normal((4, 192)) + 1.0
    with caplog.at_level(logging.WARNING, logger="musicdiff.evaluation"):
        res = FrechetDistance(None, name="fd_x").results(g, r)
    assert "4 generated and 4 reference embeddings in 192 dimensions" in caplog.text
    assert res["fd_x_diagonal"] == 1.0 and res["fd_x"] == pytest.approx(diagonal_frechet_distance(g, r))
    mu = ((g.mean(0) - r.mean(0)) ** 2).sum()
    assert res["fd_x"] == pytest.approx(mu + ((g.std(0, ddof=1) - r.std(0, ddof=1)) ** 2).sum())
    with pytest.raises(ValueError, match="needs more than 192 in each set"):
        FrechetDistance(None, name="fd_x", small_sample="error").results(g, r)
    big = FrechetDistance(None, name="fd_x").results(rng.standard_normal((200, 8)), rng.standard_normal((9, 8)))
    assert big["fd_x_diagonal"] == 0.0


def test_kl_and_clap_intervals_on_audio_sets():
    class Fixed:  # classifier/embedder returning per-item rows keyed by the audio's first sample
        cache_key = "fixed"

        def __init__(self, rows):
            self.rows = rows

        def classify(self, audio, sample_rate=None):
            return np.stack([self.rows[int(a[0, 0])] for a in audio])

        embed_audio = classify

        def embed_text(self, texts):
            return np.stack([self.rows[int(t)] for t in texts])

    rng = np.random.default_rng(3)
    rows = rng.dirichlet(np.ones(5), size=40)
    fixed = Fixed(rows)
    gen = AudioSet([torch.full((1, 4), float(i)) for i in range(20)], [f"{i}" for i in range(20)], 16000)
    ref = AudioSet([torch.full((1, 4), float(i + 20)) for i in range(20)], [f"{i}" for i in range(20)], 16000)
    kl = KLDivergence(fixed, name="kl", bootstrap=200).evaluate(gen, ref)
    assert kl["kl_ci_low"] < kl["kl"] < kl["kl_ci_high"] and set(kl) == {"kl", "kl_ci_low", "kl_ci_high"}
    pooled = PooledKLDivergence(fixed, name="klp", bootstrap=200).evaluate(gen, ref)
    assert pooled["klp_ci_low"] < pooled["klp_ci_high"]
    prompts = {f"{i}": str(i + 20) for i in range(20)}
    clap = CLAPScore(fixed, name="clap", bootstrap=200).evaluate(gen, None, prompts)
    assert clap["clap_ci_low"] < clap["clap"] < clap["clap_ci_high"]
    assert KLDivergence(fixed, name="kl").evaluate(gen, ref) == {"kl": kl["kl"]}  # no bootstrap: no interval
