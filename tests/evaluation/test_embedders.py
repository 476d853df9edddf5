"""Embedders: shapes, determinism, resampling, the CLAP loader (tiny local model) and parity with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from musicdiff.evaluation import AudioSet, ClapEmbedder, Embedder, MelStatsEmbedder, RandomConvEmbedder


def _sine(freq: float, sr: int, seconds: float = 0.5, channels: int = 2) -> torch.Tensor:
    t = torch.arange(int(sr * seconds)) / sr
    return (0.5 * torch.sin(2 * torch.pi * freq * t))[None].repeat(channels, 1)


def test_melstats_shape_determinism_and_resampling():
    emb = MelStatsEmbedder(n_mels=32)
    assert isinstance(emb, Embedder)
    items = [_sine(440, 16000), _sine(220, 16000, 0.2, channels=1), torch.zeros(2, 10)]
    a, b = emb.embed_audio(items), emb.embed_audio(items)
    assert a.shape == (3, 96) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    # the same tone given at 32 kHz is resampled to 16 kHz and embeds (almost) identically
    at_32k = emb.embed_audio([_sine(440, 32000)], sample_rate=32000)
    assert np.abs(at_32k[0] - a[0]).max() < 0.05 * np.abs(a[0]).max()
    assert np.abs(a[0] - emb.embed_audio([_sine(880, 16000)])[0]).max() > 1.0


def test_bad_audio_raises():
    with pytest.raises(ValueError, match="non-empty"):
        MelStatsEmbedder().embed_audio([torch.zeros(2, 0)])
    with pytest.raises(ValueError, match="NaN"):
        MelStatsEmbedder().embed_audio([torch.full((1, 100), float("nan"))])


def test_random_conv_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = RandomConvEmbedder(n_mels=16, dim=24, num_classes=5, seed=7)
    assert torch.rand(1) == before  # construction did not consume global randomness
    b = RandomConvEmbedder(n_mels=16, dim=24, num_classes=5, seed=7)
    c = RandomConvEmbedder(n_mels=16, dim=24, num_classes=5, seed=8)
    items = [_sine(330, 16000), _sine(660, 16000)]
    np.testing.assert_array_equal(a.embed_audio(items), b.embed_audio(items))
    assert not np.allclose(a.embed_audio(items), c.embed_audio(items))
    probs = a.classify(items)
    assert probs.shape == (2, 5)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-12)
    # gain-invariant front end: a quieter copy gets the same labels
    np.testing.assert_allclose(a.classify([items[0] * 0.1]), probs[:1], atol=1e-4)


def test_audioset_caches_embeddings():
    calls = []

    class Counting(MelStatsEmbedder):
        def embed_audio(self, audio, sample_rate=None):
            calls.append(len(audio))
            return super().embed_audio(audio, sample_rate)

    s = AudioSet([_sine(440, 16000)] * 3, ["a", "b", "c"], 16000)
    emb = Counting(n_mels=8)
    s.embed(emb)
    s.embed(emb)
    assert calls == [3]
    with pytest.raises(ValueError, match="names"):
        AudioSet([_sine(440, 16000)], ["a", "b"], 16000)


def test_clap_loader_is_lazy_and_errors_clearly(tmp_path):
    emb = ClapEmbedder(str(tmp_path / "missing"))  # constructing reads nothing
    with pytest.raises(FileNotFoundError, match="MUSICDIFF_CLAP_PATH"):
        emb.embed_text(["a piano"])


def test_clap_embeddings_match_the_model(tiny_clap_dir):
    from transformers import ClapModel, ClapProcessor

    emb = ClapEmbedder(tiny_clap_dir, batch_size=2)
    assert emb.sample_rate == 16000
    clip = _sine(440, 16000, seconds=1.5)
    a = emb.embed_audio([clip, _sine(220, 16000, seconds=1.0)])
    assert a.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    # parity with a direct ClapModel call on the mono mix (one window)
    model = ClapModel.from_pretrained(tiny_clap_dir, local_files_only=True).eval()
    proc = ClapProcessor.from_pretrained(tiny_clap_dir, local_files_only=True)
    feats = proc.feature_extractor([clip.mean(0).numpy()], sampling_rate=16000, return_tensors="pt",
                                   truncation="rand_trunc")
    with torch.no_grad():
        out = model.get_audio_features(**feats)
    ref = F.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1).numpy()
    np.testing.assert_allclose(a[:1], ref, atol=1e-5)
    # same clip at 48 kHz is resampled to the extractor's rate
    a48 = emb.embed_audio([_sine(440, 48000, seconds=1.5)], sample_rate=48000)
    assert float(a48[0] @ a[0]) > 0.99
    # a long file is cut into windows whose embeddings are averaged: two equal windows = one window
    two_windows = emb.embed_audio([torch.cat([_sine(440, 16000, 2.0)] * 2, dim=1)])
    np.testing.assert_allclose(two_windows, emb.embed_audio([_sine(440, 16000, 2.0)]), atol=1e-5)
    t = emb.embed_text(["a happy piano melody", "drums"])
    assert t.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-5)


def test_clap_zero_shot_classify(tiny_clap_dir):
    emb = ClapEmbedder(tiny_clap_dir, labels=["piano", "drums", "violin"])
    probs = emb.classify([_sine(440, 16000), _sine(110, 16000)])
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-9)
    with pytest.raises(ValueError, match="labels"):
        ClapEmbedder(tiny_clap_dir).classify([_sine(440, 16000)])
