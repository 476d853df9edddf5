"""End-to-end memorization analysis: planted copies rank first, outputs and tracking."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from musicdiff.evaluation import ClapEmbedder, MelStatsEmbedder, RandomConvEmbedder
from musicdiff.memorization import (
    IN_DISTRIBUTION, OUT_OF_DISTRIBUTION, AudioItem, find_repeats, generate_items, in_distribution_prompts,
    run_memorization_analysis,
)

SR = 16000


def _clip(i: int, seconds: float = 0.5, seed: int = 0) -> torch.Tensor:
    """A distinct two-tone stereo clip per index with a little noise."""
    g = torch.Generator().manual_seed(seed * 1000 + i)
    t = torch.arange(int(SR * seconds)) / SR
    f = 110.0 * 2 ** (i / 5)
    x = 0.3 * torch.sin(2 * torch.pi * f * t) + 0.2 * torch.sin(2 * torch.pi * f * (1.5 + 0.1 * (i % 4)) * t)
    return torch.stack([x, 0.7 * x]) + 0.02 * torch.randn(2, t.numel(), generator=g)


def _training(n: int = 24) -> list[AudioItem]:
    items = [AudioItem(f"train_{i:02d}", f"tone number {i}", audio=_clip(i), sample_rate=SR) for i in range(n)]
    items.append(AudioItem("train_dup", "tone number 5 again", audio=items[5].audio.clone(), sample_rate=SR))
    return items


def _generations(training: list[AudioItem]) -> list[AudioItem]:
    g = torch.Generator().manual_seed(99)
    fresh = [AudioItem(f"ood_{i}", f"new prompt {i}", audio=_clip(40 + i, seed=1), sample_rate=SR,
                       split=OUT_OF_DISTRIBUTION) for i in range(3)]
    copy = AudioItem("exact_copy", training[9].prompt, audio=training[9].audio.clone(), sample_rate=SR,
                     split=IN_DISTRIBUTION)
    near = AudioItem("perturbed_copy", training[17].prompt, split=IN_DISTRIBUTION, sample_rate=SR,
                     audio=training[17].audio + 1e-3 * torch.randn(training[17].audio.shape, generator=g))
    return fresh[:2] + [copy] + fresh[2:] + [near]


class _RecordingLogger:
    def __init__(self):
        self.metrics, self.artifacts = {}, []

    def log_metrics(self, metrics, step):
        self.metrics.update(metrics)

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append((str(path), artifact_path))


@pytest.mark.parametrize("embedder", [MelStatsEmbedder(n_mels=32), RandomConvEmbedder(n_mels=32, dim=64)],
                         ids=["melstats", "randconv"])
def test_planted_copy_ranks_first(tmp_path, embedder):
    train = _training()
    gens = _generations(train)
    logger = _RecordingLogger()
    res = run_memorization_analysis(embedder, train, gens, tmp_path / "mem", k=3, repeat_threshold=0.999,
                                    report=False, logger=logger, index_kwargs={"db_block": 8, "query_block": 4})
    first, second = res.ranking[0], res.ranking[1]
    assert first.name == "exact_copy" and first.neighbours[0] == 9
    assert first.top_similarity == pytest.approx(1.0, abs=1e-5)
    assert second.name == "perturbed_copy" and second.neighbours[0] == 17 and second.top_similarity > 0.999
    assert all(m.top_similarity < first.top_similarity for m in res.ranking[2:])
    assert all(len(m.neighbours) == 3 and m.similarities == sorted(m.similarities, reverse=True) for m in res.ranking)
    assert res.repeats.groups == [[5, 24]]  # the duplicated training item
    s = res.summary
    assert s[f"memorization/{IN_DISTRIBUTION}/num_above_threshold"] == 2
    assert s[f"memorization/{OUT_OF_DISTRIBUTION}/num_generations"] == 3
    assert logger.metrics == s and logger.artifacts == [(str(tmp_path / "mem"), "memorization")]
    saved = json.loads((tmp_path / "mem" / "ranking.json").read_text())
    assert saved["ranking"][0]["neighbour_names"][0] == "train_09"
    assert np.load(tmp_path / "mem" / "train_embeddings.npy").shape[0] == len(train)


def test_file_items_and_precomputed_embeddings(tmp_path):
    train = []
    for i in range(6):
        path = tmp_path / "train" / f"{i}.wav"
        path.parent.mkdir(exist_ok=True)
        sf.write(path, _clip(i).numpy().T, SR)
        train.append(AudioItem(path.stem, f"prompt {i}", path=str(path)))
    emb = MelStatsEmbedder(n_mels=16)
    gens = [AudioItem("copy_of_3", "x", audio=_clip(3), sample_rate=SR, split=IN_DISTRIBUTION)]
    res = run_memorization_analysis(emb, train, gens, tmp_path / "a", report=False)
    assert res.ranking[0].neighbours[0] == 3
    res2 = run_memorization_analysis(emb, train, gens, tmp_path / "b", report=False,
                                     training_embeddings=tmp_path / "a" / "train_embeddings.npy")
    assert res2.ranking[0].neighbours == res.ranking[0].neighbours
    with pytest.raises(ValueError, match="training embeddings"):
        run_memorization_analysis(emb, train, gens, tmp_path / "c", training_embeddings=np.zeros((2, 48)))
    with pytest.raises(ValueError, match="needs audio or a path"):
        AudioItem("nothing")


def test_in_distribution_prompts_and_generate_items():
    train = _training()
    emb = RandomConvEmbedder(n_mels=32, dim=64).embed_audio([it.audio for it in train], SR)
    rep = find_repeats(emb, threshold=0.999)
    assert in_distribution_prompts(train, rep) == ["tone number 5", "tone number 5 again"]
    items = generate_items(["a", "b", "c"], IN_DISTRIBUTION, lambda ps: [torch.zeros(2, 100) for _ in ps], SR,
                           batch_size=2)
    assert [it.name for it in items] == [f"{IN_DISTRIBUTION}_0000{i}" for i in range(3)]
    assert all(it.split == IN_DISTRIBUTION and it.prompt for it in items)
    with pytest.raises(ValueError, match="clips"):
        generate_items(["a"], IN_DISTRIBUTION, lambda ps: [], SR)


def test_with_tiny_clap_audio_tower(tmp_path):
    from tests.evaluation.conftest import make_clap_with_processor

    emb = ClapEmbedder(make_clap_with_processor(tmp_path / "clap"))
    train = _training(10)
    gens = [AudioItem("ood", "p", audio=_clip(30, seed=2), sample_rate=SR, split=OUT_OF_DISTRIBUTION),
            AudioItem("copy", "p", audio=train[4].audio.clone(), sample_rate=SR, split=IN_DISTRIBUTION)]
    res = run_memorization_analysis(emb, train, gens, tmp_path / "mem", report=False)
    assert res.ranking[0].name == "copy" and res.ranking[0].neighbours[0] == 4
    assert res.ranking[0].top_similarity == pytest.approx(1.0, abs=1e-5)
