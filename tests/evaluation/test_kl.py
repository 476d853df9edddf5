"""KL divergence between label distributions (PaSST-KL convention) and its pooled variant."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicdiff.evaluation import AudioSet, KLDivergence, PooledKLDivergence, RandomConvEmbedder, kl_divergence
from musicdiff.evaluation.kl import pair_ids


def test_kl_closed_form_and_properties():
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    q = np.array([[0.25, 0.75], [0.9, 0.1]])
    expected0 = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    kl = kl_divergence(p, q, eps=0.0)
    assert kl[0] == pytest.approx(expected0, rel=1e-12)
    assert kl[1] == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)
    a, b = rng.dirichlet(np.ones(5), 20), rng.dirichlet(np.ones(5), 20)
    assert (kl_divergence(a, b) >= -1e-12).all()
    assert not np.allclose(kl_divergence(a, b), kl_divergence(b, a))  # KL is not symmetric
    with pytest.raises(ValueError, match="non-negative"):
        kl_divergence(-a, b)


def test_pair_ids_by_stem_and_pattern():
    gen = ["x/0001.wav", "0002.wav", "0003_take2.wav", "zzz.wav"]
    ref = ["0003.flac", "0001.wav", "0002.wav"]
    assert pair_ids(gen, ref) == [(0, 1), (1, 2)]
    assert pair_ids(gen, ref, id_pattern=r"^(\d+)") == [(0, 1), (1, 2), (2, 0)]
    with pytest.raises(ValueError, match="twice"):
        pair_ids(gen, ["a/0001.wav", "b/0001.flac"])


def test_paired_mean_and_pooled_convexity():
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(6), 30), rng.dirichlet(np.ones(6), 30)
    metric = KLDivergence(classifier=None)
    pairs = [(i, (i + 3) % 30) for i in range(30)]
    expected = np.mean([kl_divergence(q[j:j + 1], p[i:i + 1])[0] for i, j in pairs])
    assert metric.from_probs(p, q, pairs) == pytest.approx(expected, rel=1e-10)
    pooled = PooledKLDivergence(classifier=None).from_probs(p, q)
    assert pooled == pytest.approx(kl_divergence(q.mean(0, keepdims=True), p.mean(0, keepdims=True))[0])
    # joint convexity of KL: the pooled value never exceeds the paired mean
    assert pooled <= metric.from_probs(p, q) + 1e-12


def _sounds(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    t = torch.arange(8000) / 16000
    return [(torch.sin(2 * torch.pi * (100 * (i + 1)) * t) + 0.2 * (i % 3) * torch.randn(8000, generator=g))[None]
            .repeat(2, 1) * 0.4 for i in range(n)]


def test_evaluate_pairs_by_name_not_order():
    audio = _sounds(5)
    names = [f"{i:03d}.wav" for i in range(5)]
    clf = RandomConvEmbedder(n_mels=16, dim=16, num_classes=8)
    ref = AudioSet(audio, names, 16000)
    shuffled = AudioSet(audio[::-1], names[::-1], 16000)
    assert KLDivergence(clf).evaluate(shuffled, ref)["kl"] == pytest.approx(0.0, abs=1e-9)
    assert KLDivergence(clf, pairing="order").evaluate(shuffled, ref)["kl"] > 1e-3
    assert PooledKLDivergence(clf).evaluate(shuffled, ref)["kl_pooled"] == pytest.approx(0.0, abs=1e-9)


def test_evaluate_errors():
    audio = _sounds(2)
    clf = RandomConvEmbedder(n_mels=16, dim=16, num_classes=8)
    with pytest.raises(ValueError, match="no generated file name matches"):
        KLDivergence(clf).evaluate(AudioSet(audio, ["a", "b"], 16000), AudioSet(audio, ["c", "d"], 16000))
    with pytest.raises(ValueError, match="equal counts"):
        KLDivergence(clf, pairing="order").evaluate(AudioSet(audio, ["a", "b"], 16000),
                                                    AudioSet(audio[:1], ["c"], 16000))
    with pytest.raises(ValueError, match="pairing"):
        KLDivergence(clf, pairing="random")
