"""The music-model numbers of the memorization run (FD, pooled KL, nearest neighbours, agreement with
the detector) against closed forms, and the training-feature cache (hit, stale files, no cache)."""

from __future__ import annotations

import numpy as np
import pytest

from musicdiff.evaluation.frechet import diagonal_frechet_distance
from musicdiff.memorization import IN_DISTRIBUTION, OUT_OF_DISTRIBUTION, AudioItem
from musicdiff.memorization.analysis import Match
from musicdiff.memorization.music_metrics import cached_music_features, music_metrics


def test_music_metrics_match_closed_forms():
    rng = np.random.default_rng(0)
    train = {"features": rng.standard_normal((6, 4)), "tags": rng.dirichlet(np.ones(3), 6)}
    gens = {"features": np.stack([train["features"][2], rng.standard_normal(4)]), "tags": rng.dirichlet(np.ones(3), 2)}
    items = [AudioItem("copy", audio=np.zeros(1), sample_rate=1, split=IN_DISTRIBUTION),
             AudioItem("new", audio=np.zeros(1), sample_rate=1, split=OUT_OF_DISTRIBUTION)]
    ranking = [Match(0, "copy", None, IN_DISTRIBUTION, [2], [1.0]),  # the detector's nearest items: 2 and 5
               Match(1, "new", None, OUT_OF_DISTRIBUTION, [5], [0.3])]
    out, per_gen = music_metrics(train, gens, items, ranking, prefix="m")
    unit = train["features"] / np.linalg.norm(train["features"], axis=1, keepdims=True)
    sims = unit @ (gens["features"][1] / np.linalg.norm(gens["features"][1]))
    assert per_gen[0] == {"similarity": pytest.approx(1.0, abs=1e-6), "nearest": 2}
    assert per_gen[1] == {"similarity": pytest.approx(sims.max(), abs=1e-6), "nearest": int(sims.argmax())}
    assert out["m/fd"] == pytest.approx(diagonal_frechet_distance(gens["features"], train["features"]))
    assert out["m/fd_diagonal"] == 1  # 2 and 6 items in 4 dimensions
    p, q = train["tags"].mean(0), gens["tags"].mean(0)
    assert out["m/kl_pooled"] == pytest.approx(float(np.sum(p * np.log((p + 1e-8) / (q + 1e-8)))), rel=1e-6)
    assert out["m/in_distribution/max_nn_similarity"] == pytest.approx(1.0, abs=1e-6)
    assert out["m/out_of_distribution/mean_nn_similarity"] == pytest.approx(sims.max(), abs=1e-6)
    assert out["m/all/mean_nn_similarity"] == pytest.approx((1.0 + sims.max()) / 2, abs=1e-6)
    assert out["m/nn_agreement"] == pytest.approx((1 + (int(sims.argmax()) == 5)) / 2)


def test_training_features_cache(tmp_path):
    files = []
    for i in range(2):
        files.append(tmp_path / f"clip{i}.wav")
        files[-1].write_bytes(b"x" * (i + 1))
    items = [AudioItem(f.name, path=str(f)) for f in files]
    calls = []

    def compute():
        calls.append(1)
        return {"features": np.full((2, 3), float(len(calls))), "tags": np.zeros((2, 0))}

    first, hit = cached_music_features(tmp_path / "cache", "k", items, compute)
    assert not hit and len(calls) == 1 and (tmp_path / "cache" / "music_k" / "features.npz").is_file()
    again, hit = cached_music_features(tmp_path / "cache", "k", items, compute)
    assert hit and len(calls) == 1 and np.array_equal(again["features"], first["features"])
    files[1].write_bytes(b"changed")  # a training file changed: the cache is stale
    fresh, hit = cached_music_features(tmp_path / "cache", "k", items, compute)
    assert not hit and len(calls) == 2 and fresh["features"][0, 0] == 2.0
    _, hit = cached_music_features(None, "k", items, compute)  # cache_dir=null: always computed
    assert not hit and len(calls) == 3
