"""CLAP score: mean text-audio cosine, checked against a closed form and the tiny CLAP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicdiff.evaluation import AudioSet, ClapEmbedder, CLAPScore, MelStatsEmbedder
from musicdiff.evaluation.clap_score import cosine_rows, lookup_prompts


class _FixedEmbedder:
    """Audio i -> e_{i mod 2}; text 'up' -> e_0, 'diag' -> (e_0 + e_1)/sqrt(2)."""

    sample_rate = 16000

    def embed_audio(self, audio, sample_rate=None):
        return np.stack([np.eye(2)[i % 2] for i in range(len(audio))])

    def embed_text(self, texts):
        table = {"up": np.array([1.0, 0.0]), "diag": np.array([1.0, 1.0]) / np.sqrt(2)}
        return np.stack([table[t] for t in texts])


def test_cosine_rows_closed_form():
    a = np.array([[1.0, 0.0], [3.0, 4.0]])
    b = np.array([[0.0, 2.0], [6.0, 8.0]])
    np.testing.assert_allclose(cosine_rows(a, b), [0.0, 1.0])


def test_score_is_mean_cosine_and_matches_by_name():
    audio = [torch.zeros(1, 10)] * 3
    gen = AudioSet(audio, ["sub/a.wav", "b.wav", "c.wav"], 16000)
    prompts = {"a": "up", "b.wav": "diag", "other": "up"}  # c has no prompt and is ignored
    assert lookup_prompts(gen.names, prompts) == ["up", "diag", None]
    score = CLAPScore(_FixedEmbedder()).evaluate(gen, None, prompts)["clap_score"]
    assert score == pytest.approx((1.0 + 1 / np.sqrt(2)) / 2)
    assert CLAPScore(_FixedEmbedder()).score(audio[:2], ["up", "up"]) == pytest.approx(0.5)


def test_errors():
    with pytest.raises(ValueError, match="embed_text"):
        CLAPScore(MelStatsEmbedder())
    gen = AudioSet([torch.zeros(1, 10)], ["a.wav"], 16000)
    with pytest.raises(ValueError, match="needs prompts"):
        CLAPScore(_FixedEmbedder()).evaluate(gen, None, None)
    with pytest.raises(ValueError, match="no generated file has a prompt"):
        CLAPScore(_FixedEmbedder()).evaluate(gen, None, {"zzz": "up"})


def test_tiny_clap_score_matches_model_similarity(tiny_clap_dir):
    emb = ClapEmbedder(tiny_clap_dir)
    t = torch.arange(16000) / 16000
    audio = [torch.sin(2 * torch.pi * f * t)[None].repeat(2, 1) * 0.5 for f in (220.0, 440.0)]
    texts = ["a happy piano melody", "sad violin with drums"]
    score = CLAPScore(emb).score(audio, texts, 16000)
    expected = float(np.mean(np.sum(emb.embed_audio(audio) * emb.embed_text(texts), axis=1)))
    assert score == pytest.approx(expected, abs=1e-6)
    assert -1.0 <= score <= 1.0
