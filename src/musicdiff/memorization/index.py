"""Nearest-neighbour search over embeddings by cosine similarity (SA2 §4.5).

:class:`CosineIndex` stores L2-normalised embeddings and answers exact top-k queries with
blocked matrix products: queries are processed ``query_block`` rows at a time against
``db_block`` database rows at a time, keeping a running top-k, so memory is bounded by
``query_block x db_block`` scores whatever the database size. 10^6 x 512 embeddings take
2 GB in float32 (1 GB with ``dtype=torch.float16``) and a full self-search is a few
minutes on one GPU. If ``faiss`` is installed and ``backend="faiss"`` (or ``"auto"`` on CPU),
an exact ``IndexFlatIP`` is used instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class CosineIndex:
    """Exact cosine-similarity index with blocked top-k search.

    Args:
        dim: embedding size (checked on :meth:`add`; inferred from the first batch if ``None``).
        device: device for storage and matmuls (``"cuda"`` for 10^6-scale searches).
        dtype: storage/compute dtype (``torch.float16`` halves memory on GPU).
        db_block: database rows per matmul block.
        query_block: query rows per block.
        backend: ``"torch"``, ``"faiss"`` (exact ``IndexFlatIP``) or ``"auto"`` (faiss if
            installed and the device is the CPU).
    """

    def __init__(self, dim: int | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                 db_block: int = 65536, query_block: int = 1024, backend: str = "torch") -> None:
        if backend not in ("torch", "faiss", "auto"):
            raise ValueError(f"CosineIndex: backend must be 'torch', 'faiss' or 'auto', got {backend!r}")
        if backend == "faiss" and not _faiss_available():
            raise ValueError("CosineIndex: backend='faiss' but faiss is not installed")
        if db_block <= 0 or query_block <= 0:
            raise ValueError("CosineIndex: block sizes must be positive")
        self.dim, self.device, self.dtype = dim, torch.device(device), dtype
        self.db_block, self.query_block = int(db_block), int(query_block)
        self.use_faiss = backend == "faiss" or (backend == "auto" and _faiss_available() and self.device.type == "cpu")
        self._chunks: list[torch.Tensor] = []
        self._data: torch.Tensor | None = None
        self._faiss = None

    def __len__(self) -> int:
        return sum(c.shape[0] for c in self._chunks) if self._data is None else self._data.shape[0]

    def _prep(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            arr = np.asarray(x, dtype=np.float32)
            x = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # memmaps are read-only
        x = x.float()
        if x.dim() != 2:
            raise ValueError(f"CosineIndex: embeddings must be [N, D], got shape {tuple(x.shape)}")
        if self.dim is None:
            self.dim = x.shape[1]
        if x.shape[1] != self.dim:
            raise ValueError(f"CosineIndex: embedding dim {x.shape[1]} does not match index dim {self.dim}")
        if not torch.isfinite(x).all():
            raise ValueError("CosineIndex: embeddings contain NaN or Inf")
        return F.normalize(x, dim=1)

    def add(self, embeddings: np.ndarray | torch.Tensor) -> None:
        """Append embeddings ``[N, D]`` (normalised on the way in); ids continue from ``len(self)``."""
        x = self._prep(embeddings)
        if self._data is not None:
            self._chunks, self._data = [self._data], None
        self._chunks.append(x.to(self.device, self.dtype))
        self._faiss = None

    @property
    def data(self) -> torch.Tensor:
        """All stored (normalised) embeddings ``[N, D]``."""
        if self._data is None:
            if not self._chunks:
                raise ValueError("CosineIndex is empty; call add() first")
            self._data = torch.cat(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
            self._chunks = []
        return self._data

    def search(self, queries: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` database items per query by cosine similarity.

        Args:
            queries: ``[M, D]`` embeddings (normalised here).
            k: neighbours per query (capped at the database size).

        Returns:
            ``(similarities [M, k] float32, indices [M, k] int64)``, best first.
        """
        db = self.data
        q = self._prep(queries)
        k = min(int(k), db.shape[0])
        if k <= 0:
            raise ValueError("CosineIndex.search: k must be positive")
        if self.use_faiss:
            return self._search_faiss(q, k)
        sims_out, idx_out = [], []
        for qs in range(0, q.shape[0], self.query_block):
            qb = q[qs:qs + self.query_block].to(self.device, self.dtype)
            best_s = torch.full((qb.shape[0], 0), -2.0, device=self.device)
            best_i = torch.zeros((qb.shape[0], 0), dtype=torch.long, device=self.device)
            for ds in range(0, db.shape[0], self.db_block):
                s = (qb @ db[ds:ds + self.db_block].T).float()
                ks = min(k, s.shape[1])
                top_s, top_i = s.topk(ks, dim=1)
                cat_s, cat_i = torch.cat([best_s, top_s], 1), torch.cat([best_i, top_i + ds], 1)
                best_s, order = cat_s.topk(min(k, cat_s.shape[1]), dim=1)
                best_i = cat_i.gather(1, order)
            sims_out.append(best_s.cpu())
            idx_out.append(best_i.cpu())
        return torch.cat(sims_out).numpy(), torch.cat(idx_out).numpy()

    def _search_faiss(self, q: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        if self._faiss is None:
            self._faiss = faiss.IndexFlatIP(self.dim)
            self._faiss.add(np.ascontiguousarray(self.data.float().cpu().numpy()))
        sims, idx = self._faiss.search(np.ascontiguousarray(q.numpy()), k)
        return sims.astype(np.float32), idx.astype(np.int64)

    def save(self, path: str | Path) -> None:
        """Write the normalised embeddings as ``.npy`` (float32)."""
        np.save(Path(path), self.data.float().cpu().numpy())

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> "CosineIndex":
        """Index over embeddings saved by :meth:`save` (or any ``[N, D]`` ``.npy``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"embedding file not found: {path}")
        index = cls(**kwargs)
        index.add(np.load(path, mmap_mode="r"))
        return index
