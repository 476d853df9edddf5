"""Bootstrap confidence intervals for the evaluation metrics (FD, KL, CLAP score).

A metric computed on N clips is an estimate; its spread over resampled sets (Efron 1979;
percentile interval via ``scipy.stats.bootstrap``) says how far another draw of N clips could
move it. The interval covers sampling variability only: FD is biased upward at small N (its
expectation grows like ``Tr(S)/N``; Binkowski et al. 2018, Chong & Forsyth 2020), so compare
FDs computed from equal N.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np


def bootstrap_ci(statistic: Callable[..., float], sizes: Sequence[int], num_resamples: int,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over independently resampled index sets.

    Args:
        statistic: called as ``statistic(idx_1, idx_2, ...)`` with one integer index array per
            sample (drawn with replacement from ``range(sizes[k])``); returns a float.
        sizes: number of items in each sample (e.g. generated and reference clips for FD,
            or the number of pairs for a paired metric).
        num_resamples: bootstrap resamples (>= 2; 1000 for publication-grade intervals).
        confidence: two-sided confidence level in (0, 1).
        seed: seed of the resampling generator (intervals are reproducible).

    Returns:
        ``(low, high)``; ``(nan, nan)`` when a sample has a single item (no spread to resample).
    """
    import inspect

    from scipy.stats import bootstrap

    if num_resamples < 2 or not 0 < confidence < 1:
        raise ValueError(f"bootstrap_ci: need num_resamples >= 2 and 0 < confidence < 1, got "
                         f"{num_resamples}, {confidence}")
    if min(sizes) < 2:
        return float("nan"), float("nan")
    data = tuple(np.arange(n) for n in sizes)
    gen = np.random.default_rng(seed)
    rng_kw = {"rng": gen} if "rng" in inspect.signature(bootstrap).parameters else {"random_state": gen}  # scipy<1.15
    res = bootstrap(data, lambda *idx: statistic(*(np.asarray(i, dtype=np.int64) for i in idx)),
                    n_resamples=int(num_resamples), confidence_level=confidence, method="percentile",
                    vectorized=False, **rng_kw)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def with_interval(name: str, value: float, interval: tuple[float, float] | None) -> dict[str, float]:
    """``{name: value}`` plus ``{name}_ci_low`` / ``{name}_ci_high`` when an interval was computed."""
    out = {name: float(value)}
    if interval is not None:
        out[f"{name}_ci_low"], out[f"{name}_ci_high"] = interval
    return out
