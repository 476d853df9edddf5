"""Repeated training items by threshold with union-find groups."""

from __future__ import annotations

import numpy as np
import pytest

from musicdiff.memorization import UnionFind, find_repeats


def test_union_find():
    uf = UnionFind(6)
    assert uf.union(0, 1) and uf.union(1, 2) and not uf.union(0, 2)
    uf.union(4, 5)
    assert uf.groups() == [[0, 1, 2], [4, 5]]
    assert uf.find(2) == uf.find(0) != uf.find(3)


def test_planted_repeats_are_grouped():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((200, 32))
    emb[50] = emb[10] * 2.0                                   # exact copy (scaled: cosine 1)
    emb[51] = emb[10] + 1e-3 * rng.standard_normal(32)        # near copy
    emb[120] = emb[7]
    rep = find_repeats(emb, threshold=0.99, k=4, query_block=16, db_block=64)
    assert rep.groups == [[10, 50, 51], [7, 120]]
    assert rep.repeated_items == [7, 10, 50, 51, 120]
    assert rep.group_of[51] == 0 and rep.group_of[120] == 1
    assert {(i, j) for i, j, _ in rep.pairs} == {(10, 50), (10, 51), (50, 51), (7, 120)}
    assert all(s >= 0.99 for *_, s in rep.pairs)
    assert rep.summary()["repeats/num_items"] == 5


def test_large_group_joined_through_chains():
    # 10 copies of one item but only k=3 neighbours per item: union-find still joins all ten
    rng = np.random.default_rng(1)
    emb = rng.standard_normal((40, 16))
    base = emb[0].copy()
    for i in range(10):
        emb[i] = base + 1e-4 * i * rng.standard_normal(16)
    rep = find_repeats(emb, threshold=0.999, k=3)
    assert rep.groups == [list(range(10))]


def test_no_repeats_and_bad_threshold():
    emb = np.eye(8)
    assert find_repeats(emb, threshold=0.5).groups == []
    with pytest.raises(ValueError, match="threshold"):
        find_repeats(emb, threshold=1.5)
