"""CosineIndex: exact blocked top-k against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicdiff.memorization import CosineIndex


def _brute(db: np.ndarray, q: np.ndarray, k: int):
    dbn = db / np.linalg.norm(db, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    s = qn @ dbn.T
    idx = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, idx, 1), idx


@pytest.mark.parametrize("db_block,query_block", [(7, 5), (1000, 1000), (1, 3)])
def test_blocked_search_matches_brute_force(db_block, query_block):
    rng = np.random.default_rng(0)
    db, q = rng.standard_normal((103, 12)), rng.standard_normal((17, 12))
    index = CosineIndex(db_block=db_block, query_block=query_block)
    index.add(db[:50])
    index.add(db[50:])  # ids continue across add() calls
    assert len(index) == 103
    sims, idx = index.search(q, 5)
    ref_s, ref_i = _brute(db, q, 5)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(sims, ref_s, atol=1e-5)
    assert sims.shape == (17, 5) and idx.dtype == np.int64


def test_k_is_capped_scale_invariant_and_self_match():
    rng = np.random.default_rng(1)
    db = rng.standard_normal((4, 6))
    index = CosineIndex()
    index.add(torch.from_numpy(db))
    sims, idx = index.search(3.0 * db, 10)  # cosine ignores scale; k capped at 4
    assert sims.shape == (4, 4)
    np.testing.assert_array_equal(idx[:, 0], np.arange(4))
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-6)


def test_save_load_and_half_precision(tmp_path):
    rng = np.random.default_rng(2)
    db, q = rng.standard_normal((64, 8)), rng.standard_normal((5, 8))
    index = CosineIndex()
    index.add(db)
    index.save(tmp_path / "emb.npy")
    loaded = CosineIndex.load(tmp_path / "emb.npy", dtype=torch.float16, db_block=16)
    s1, i1 = index.search(q, 3)
    s2, _ = loaded.search(q, 3)
    np.testing.assert_allclose(s1, s2, atol=5e-3)
    with pytest.raises(FileNotFoundError):
        CosineIndex.load(tmp_path / "missing.npy")


def test_errors():
    index = CosineIndex(dim=4)
    with pytest.raises(ValueError, match="empty"):
        index.search(np.ones((1, 4)), 1)
    with pytest.raises(ValueError, match="dim"):
        index.add(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        index.add(np.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match="backend"):
        CosineIndex(backend="annoy")
