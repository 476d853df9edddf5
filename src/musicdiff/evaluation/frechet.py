"""Fréchet distance between Gaussian fits of embedding sets (FAD / FD_openl3 of SA2 Table 2).

For embeddings of generated audio ``N(mu_g, S_g)`` and of reference audio ``N(mu_r, S_r)``
(Heusel et al. 2017, Eq. 6; Kilgour et al. 2019 for audio):

    FD = ||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^{1/2})

The matrix square root uses ``scipy.linalg.sqrtm`` with the usual numerical fixes: if the
product is singular (non-finite root) a small ``eps * I`` is added to both covariances, and a
negligible imaginary part from round-off is dropped (a large one is an error).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from musicdiff.evaluation.embedders import AudioSet, Embedder

log = logging.getLogger("musicdiff.evaluation")


def gaussian_stats(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` of embeddings ``[N, D]`` (float64).

    Raises:
        ValueError: for fewer than 2 rows, a non-2-D array or non-finite values.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"Fréchet distance needs at least 2 embeddings of shape [N, D], got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("Fréchet distance: embeddings contain NaN or Inf")
    return x.mean(0), np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Args:
        mu1, mu2: means ``[D]``.
        sigma1, sigma2: covariances ``[D, D]``.
        eps: diagonal offset added when the product of covariances is singular.

    Returns:
        The distance (a non-negative float, up to round-off which is clipped at 0).
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"Fréchet distance: shape mismatch mu {mu1.shape}/{mu2.shape}, sigma {s1.shape}/{s2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(s1 @ s2)
    if isinstance(covmean, tuple):  # older scipy with disp=False semantics
        covmean = covmean[0]
    if not np.isfinite(covmean).all():
        log.warning("Fréchet distance: singular covariance product; adding %g to the diagonals", eps)
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
        if isinstance(covmean, tuple):
            covmean = covmean[0]
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(covmean.imag)) if covmean.size else 0.0
        scale = max(1.0, float(np.max(np.abs(covmean.real)))) if covmean.size else 1.0
        if imag > 1e-3 * scale:
            raise ValueError(f"Fréchet distance: matrix square root has a large imaginary part ({imag:.3g})")
        covmean = covmean.real
    fd = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(fd, 0.0)


class FrechetDistance:
    """Fréchet distance between embeddings of generated and reference audio.

    Args:
        embedder: any :class:`~musicdiff.evaluation.embedders.Embedder` (CLAP, MelStats, ...).
        name: key of the result (``fd`` by default).
        eps: see :func:`frechet_distance`.
    """

    requires = ("reference",)

    def __init__(self, embedder: Embedder, name: str = "fd", eps: float = 1e-6) -> None:
        self.embedder, self.name, self.eps = embedder, name, eps

    def from_embeddings(self, generated: np.ndarray, reference: np.ndarray) -> float:
        """FD between two embedding arrays ``[N, D]`` and ``[M, D]``."""
        g, r = np.asarray(generated), np.asarray(reference)
        if g.ndim != 2 or r.ndim != 2 or g.shape[1] != r.shape[1]:
            raise ValueError(f"Fréchet distance: embedding shapes {g.shape} and {r.shape} do not match")
        return frechet_distance(*gaussian_stats(g), *gaussian_stats(r), eps=self.eps)

    def evaluate(self, generated: AudioSet, reference: AudioSet | None = None,
                 prompts: dict[str, str] | None = None, **_: Any) -> dict[str, float]:
        """``{name: FD}`` for two audio sets (embeddings cached on the sets)."""
        if reference is None:
            raise ValueError(f"metric {self.name!r} (Fréchet distance) needs reference audio")
        return {self.name: self.from_embeddings(generated.embed(self.embedder), reference.embed(self.embedder))}
