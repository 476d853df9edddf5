"""Repeated training items: groups of near-identical embeddings (SA2 §4.5).

SA2 embeds every training item with a CLAP audio encoder and calls two items repeats when
their cosine similarity exceeds a threshold chosen so that pairs above it are exact replicas
(5,566 repeated items in SA2's data). Here each item's ``k`` nearest neighbours are searched
with :class:`~musicdiff.memorization.index.CosineIndex`; pairs above the threshold are merged
with union-find, so groups larger than ``k`` are still joined through chains of neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from musicdiff.memorization.index import CosineIndex


class UnionFind:
    """Disjoint sets over ``0..n-1`` with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))
        self.size = [1] * n

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> bool:
        """Merge the sets of ``a`` and ``b``; False if they were already one set."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True

    def groups(self, min_size: int = 2) -> list[list[int]]:
        """Sets with at least ``min_size`` members, each sorted, largest first."""
        out: dict[int, list[int]] = {}
        for i in range(len(self.parent)):
            out.setdefault(self.find(i), []).append(i)
        return sorted((g for g in out.values() if len(g) >= min_size), key=lambda g: (-len(g), g[0]))


@dataclass
class RepeatGroups:
    """Result of :func:`find_repeats`.

    Attributes:
        groups: groups of training indices (size >= 2), largest first.
        pairs: ``(i, j, similarity)`` with ``i < j`` for every neighbour pair above the threshold.
        threshold: the similarity threshold used.
        num_items: number of training items searched.
    """

    groups: list[list[int]]
    pairs: list[tuple[int, int, float]]
    threshold: float
    num_items: int
    group_of: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.group_of = {i: g for g, members in enumerate(self.groups) for i in members}

    @property
    def repeated_items(self) -> list[int]:
        """Every training index that belongs to a group (SA2 counts these)."""
        return sorted(self.group_of)

    def summary(self) -> dict[str, float]:
        """Scalars for logging."""
        return {"repeats/num_items": float(len(self.group_of)), "repeats/num_groups": float(len(self.groups)),
                "repeats/largest_group": float(len(self.groups[0]) if self.groups else 0),
                "repeats/fraction": float(len(self.group_of) / max(self.num_items, 1))}


def find_repeats(embeddings: np.ndarray | CosineIndex, threshold: float = 0.95, k: int = 16,
                 **index_kwargs) -> RepeatGroups:
    """Group training items whose cosine similarity is at least ``threshold``.

    Args:
        embeddings: ``[N, D]`` training embeddings or a filled :class:`CosineIndex`.
        threshold: cosine similarity at or above which two items are repeats.
        k: neighbours examined per item (including itself).
        **index_kwargs: options of :class:`CosineIndex` when ``embeddings`` is an array.

    Returns:
        The :class:`RepeatGroups`.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"find_repeats: threshold must be a cosine similarity in [-1, 1], got {threshold}")
    if isinstance(embeddings, CosineIndex):
        index = embeddings
    else:
        index = CosineIndex(**index_kwargs)
        index.add(embeddings)
    n = len(index)
    uf = UnionFind(n)
    pairs: dict[tuple[int, int], float] = {}
    block = max(index.query_block, 1)
    for start in range(0, n, block):
        sims, idx = index.search(index.data[start:start + block], k)
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i, j = start + r, int(idx[r, c])
            if i != j:
                key = (min(i, j), max(i, j))
                pairs[key] = max(pairs.get(key, -1.0), float(sims[r, c]))
                uf.union(i, j)
    return RepeatGroups(uf.groups(), sorted((i, j, s) for (i, j), s in pairs.items()), float(threshold), n)
