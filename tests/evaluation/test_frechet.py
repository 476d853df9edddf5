"""Fréchet distance against closed forms (Heusel et al. 2017, Eq. 6)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicdiff.evaluation import AudioSet, FrechetDistance, MelStatsEmbedder, frechet_distance, gaussian_stats


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _fd_eig(mu1, s1, mu2, s2) -> float:
    """Independent formula: Tr((S1 S2)^1/2) = sum of sqrt of the (real, >= 0) eigenvalues of S1 S2."""
    eig = np.linalg.eigvals(s1 @ s2).real.clip(0)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).sum())


def test_identical_sets_give_zero():
    x = np.random.default_rng(0).standard_normal((200, 16))
    assert abs(FrechetDistance(embedder=None).from_embeddings(x, x)) < 1e-8


def test_one_dimensional_closed_form():
    # FD between N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2.
    fd = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]]))
    assert fd == pytest.approx(9.0 + 1.0, rel=1e-10)


def test_diagonal_gaussians_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    v1, v2 = np.array([1.0, 2.0, 0.5]), np.array([4.0, 2.0, 2.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_full_covariances_match_eigenvalue_formula_and_are_symmetric():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    s1, s2 = _random_spd(rng, 8), _random_spd(rng, 8)
    fd = frechet_distance(mu1, s1, mu2, s2)
    assert fd == pytest.approx(_fd_eig(mu1, s1, mu2, s2), rel=1e-8)
    assert fd == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-8)


def test_samples_converge_to_population_distance():
    rng = np.random.default_rng(2)
    d = 4
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    s1, s2 = np.eye(d), np.diag([1.0, 2.0, 3.0, 0.5])
    x = rng.multivariate_normal(mu1, s1, size=40000)
    y = rng.multivariate_normal(mu2, s2, size=40000)
    expected = frechet_distance(mu1, s1, mu2, s2)
    assert FrechetDistance(embedder=None).from_embeddings(x, y) == pytest.approx(expected, rel=0.05)


def test_translation_invariance_and_singular_covariances():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((10, 32)), rng.standard_normal((12, 32))  # N < D: singular covariances
    metric = FrechetDistance(embedder=None)
    fd = metric.from_embeddings(x, y)
    assert np.isfinite(fd) and fd > 0
    assert metric.from_embeddings(x + 3.0, y + 3.0) == pytest.approx(fd, rel=1e-6)
    assert metric.from_embeddings(x, x) < 1e-6


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="at least 2"):
        gaussian_stats(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        gaussian_stats(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="do not match"):
        FrechetDistance(embedder=None).from_embeddings(np.zeros((3, 2)), np.zeros((3, 4)))


def test_metric_on_audio_sets():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(8000) / 16000
    tones = [torch.sin(2 * torch.pi * (200 + 40 * i) * t)[None].repeat(2, 1) * 0.5 for i in range(6)]
    noise = [0.3 * torch.randn(2, 8000, generator=g) for _ in range(6)]
    metric = FrechetDistance(MelStatsEmbedder(n_mels=16), name="fd_test")
    same = metric.evaluate(AudioSet(tones, [f"{i}" for i in range(6)], 16000), AudioSet(tones, list("abcdef"), 16000))
    assert same["fd_test"] < 1e-6
    diff = metric.evaluate(AudioSet(tones, list("abcdef"), 16000), AudioSet(noise, list("abcdef"), 16000))
    assert diff["fd_test"] > 1.0
    with pytest.raises(ValueError, match="reference"):
        metric.evaluate(AudioSet(tones, list("abcdef"), 16000), None)
