"""Fréchet distance between Gaussian fits of embedding sets (FAD / FD_openl3 of SA2 Table 2).

For embeddings of generated audio ``N(mu_g, S_g)`` and of reference audio ``N(mu_r, S_r)``
(Heusel et al. 2017, Eq. 6; Kilgour et al. 2019 for audio):

    FD = ||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^{1/2})

The matrix square root uses ``scipy.linalg.sqrtm`` with the usual numerical fixes: if the
product is singular (non-finite root) a small ``eps * I`` is added to both covariances, and a
negligible imaginary part from round-off is dropped (a large one is an error).

Sample size: a ``D``-dimensional sample covariance from ``N <= D`` embeddings is singular
(rank ``N - 1``), so the full-covariance FD is then ill-posed (noise-dominated, and the matrix
root can be far from real). :class:`FrechetDistance` therefore needs ``N > D`` in both sets
for the full formula; below that it warns and, by default, reports the FD between the
diagonal-covariance fits, ``||mu_g - mu_r||^2 + sum_d (sigma_g,d - sigma_r,d)^2``, flagged by
``<name>_diagonal = 1`` (``small_sample="error"`` refuses instead). Optional bootstrap
intervals (``musicdiff.evaluation.bootstrap``) resample both sets independently.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from musicdiff.evaluation.bootstrap import bootstrap_ci, with_interval
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


def diagonal_frechet_distance(generated: np.ndarray, reference: np.ndarray) -> float:
    """FD between diagonal-covariance Gaussian fits: ``||mu_g - mu_r||^2 + sum_d (s_g,d - s_r,d)^2``.

    The closed form of Eq. 6 for diagonal covariances (``s`` are per-dimension standard
    deviations, unbiased variances); defined for any ``N >= 2``.
    """
    mu_g, var_g = _diag_stats(generated)
    mu_r, var_r = _diag_stats(reference)
    return float(((mu_g - mu_r) ** 2).sum() + ((np.sqrt(var_g) - np.sqrt(var_r)) ** 2).sum())


def _diag_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"Fréchet distance needs at least 2 embeddings of shape [N, D], got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("Fréchet distance: embeddings contain NaN or Inf")
    return x.mean(0), x.var(0, ddof=1)


def _fd_symmetric(g: np.ndarray, r: np.ndarray) -> float:
    """Full FD via ``Tr((S_g S_r)^1/2) = Tr((S_g^1/2 S_r S_g^1/2)^1/2)`` (two symmetric eigensolves).

    Equal to :func:`frechet_distance` for PSD covariances, real by construction and ~2x faster;
    used for the many evaluations of a bootstrap.
    """
    mu_g, s_g = gaussian_stats(g)
    mu_r, s_r = gaussian_stats(r)
    w, v = np.linalg.eigh(s_g)
    root = (v * np.sqrt(w.clip(0))) @ v.T
    tr_covmean = np.sqrt(np.linalg.eigvalsh(root @ s_r @ root).clip(0)).sum()
    return max(float(((mu_g - mu_r) ** 2).sum() + np.trace(s_g) + np.trace(s_r) - 2 * tr_covmean), 0.0)


class FrechetDistance:
    """Fréchet distance between embeddings of generated and reference audio.

    Args:
        embedder: any :class:`~musicdiff.evaluation.embedders.Embedder` (musicnn, CLAP, MelStats, ...).
        name: key of the result (``fd`` by default).
        eps: see :func:`frechet_distance`.
        small_sample: what to do when a set has ``N <= D`` embeddings (singular covariance):
            ``"diagonal"`` (warn; report the diagonal-covariance FD with ``<name>_diagonal = 1``),
            ``"error"`` (refuse with a ``ValueError``) or ``"full"`` (warn; full formula anyway).
        bootstrap: resamples for a confidence interval (``<name>_ci_low/_ci_high``); 0 = none.
        confidence: two-sided level of the interval.
        seed: seed of the bootstrap resampling.
    """

    requires = ("reference",)

    def __init__(self, embedder: Embedder, name: str = "fd", eps: float = 1e-6, small_sample: str = "diagonal",
                 bootstrap: int = 0, confidence: float = 0.95, seed: int = 0) -> None:
        if small_sample not in ("diagonal", "error", "full"):
            raise ValueError(f"FrechetDistance: small_sample must be 'diagonal', 'error' or 'full', "
                             f"got {small_sample!r}")
        self.embedder, self.name, self.eps, self.small_sample = embedder, name, eps, small_sample
        self.bootstrap, self.confidence, self.seed = int(bootstrap), float(confidence), int(seed)

    def _use_diagonal(self, n_gen: int, n_ref: int, dim: int) -> bool:
        if min(n_gen, n_ref) > dim:
            return False
        msg = (f"{self.name}: {n_gen} generated and {n_ref} reference embeddings in {dim} dimensions; the full "
               f"covariance FD needs more than {dim} in each set")
        if self.small_sample == "error":
            raise ValueError(msg)
        if self.small_sample == "full":
            log.warning("%s (computing it anyway: the value is unreliable)", msg)
            return False
        log.warning("%s: reporting the diagonal-covariance FD (%s_diagonal = 1), not comparable with full FDs",
                    msg, self.name)
        return True

    def from_embeddings(self, generated: np.ndarray, reference: np.ndarray) -> float:
        """FD between two embedding arrays ``[N, D]`` and ``[M, D]`` (full covariances)."""
        g, r = self._check(generated, reference)
        return frechet_distance(*gaussian_stats(g), *gaussian_stats(r), eps=self.eps)

    @staticmethod
    def _check(generated: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g, r = np.asarray(generated, np.float64), np.asarray(reference, np.float64)
        if g.ndim != 2 or r.ndim != 2 or g.shape[1] != r.shape[1]:
            raise ValueError(f"Fréchet distance: embedding shapes {g.shape} and {r.shape} do not match")
        return g, r

    def results(self, generated: np.ndarray, reference: np.ndarray) -> dict[str, float]:
        """``{name, name_diagonal[, name_ci_low, name_ci_high]}`` for two embedding arrays."""
        g, r = self._check(generated, reference)
        diagonal = self._use_diagonal(len(g), len(r), g.shape[1])
        if diagonal:
            value = diagonal_frechet_distance(g, r)
            stat = lambda i, j: diagonal_frechet_distance(g[i], r[j])  # noqa: E731
        else:
            value = self.from_embeddings(g, r)
            stat = lambda i, j: _fd_symmetric(g[i], r[j])  # noqa: E731
        interval = bootstrap_ci(stat, (len(g), len(r)), self.bootstrap, self.confidence, self.seed) \
            if self.bootstrap else None
        return {**with_interval(self.name, value, interval), f"{self.name}_diagonal": float(diagonal)}

    def evaluate(self, generated: AudioSet, reference: AudioSet | None = None,
                 prompts: dict[str, str] | None = None, **_: Any) -> dict[str, float]:
        """``{name: FD, name_diagonal: 0|1}`` (+ interval) for two audio sets (embeddings cached on the sets)."""
        if reference is None:
            raise ValueError(f"metric {self.name!r} (Fréchet distance) needs reference audio")
        return self.results(generated.embed(self.embedder), reference.embed(self.embedder))
