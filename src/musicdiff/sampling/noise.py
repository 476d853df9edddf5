"""Seeded noise samplers for the stochastic (SDE / ancestral) samplers.

A noise sampler is a callable ``noise_sampler(sigma, sigma_next) -> Tensor`` shaped like ``x``
that returns unit-variance noise for the step ``sigma -> sigma_next`` (k-diffusion convention).

* :class:`BrownianTreeNoiseSampler` draws the increments of one Brownian motion per batch item
  (``torchsde.BrownianTree``), so the noise of an interval does not depend on the step count:
  the same seed with 50 or 100 steps samples the same underlying path (this is what
  stable-audio-tools uses through k-diffusion for ``dpmpp-3m-sde``).
* :class:`GaussianNoiseSampler` draws fresh i.i.d. noise per call from one ``torch.Generator``
  per batch item; it needs no extra package.

Both give identical noise for identical seeds, and per-item seeds make an item's noise independent
of the rest of the batch.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence

import torch

__all__ = [
    "BrownianTreeNoiseSampler",
    "GaussianNoiseSampler",
    "NoiseSampler",
    "default_noise_sampler",
    "random_seed",
]

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def random_seed() -> int:
    """Returns a fresh random seed in ``[0, 2**31 - 1)`` (independent of torch's global RNG)."""
    return random.SystemRandom().randrange(0, 2**31 - 1)


def _seed_list(seed: int | Sequence[int] | None, batch: int) -> tuple[list[int], bool]:
    """Normalises ``seed`` to a list; returns (seeds, batched) where batched means one per item."""
    if seed is None:
        return [random_seed()], False
    if isinstance(seed, int):
        return [seed], False
    seeds = [int(s) for s in seed]
    if len(seeds) != batch:
        raise ValueError(f"got {len(seeds)} seeds for a batch of {batch} items")
    return seeds, True


class BrownianTreeNoiseSampler:
    """Noise from Brownian-motion increments, ``(W(t1) - W(t0)) / sqrt(|t1 - t0|)``.

    Follows k-diffusion's ``BrownianTreeNoiseSampler`` (same seeds give the same noise), with
    torchsde's Brownian tree (Li et al. 2020, "Scalable gradients for SDEs", virtual Brownian tree).

    Args:
        x: Tensor whose shape, dtype and device the noise takes.
        sigma_min: Lowest noise level the tree must cover (> 0).
        sigma_max: Highest noise level the tree must cover.
        seed: One int for the whole batch (one tree shaped like ``x``), a list with one int per
            batch item (one tree per item, the batched case), or None for a random seed.
        transform: Maps sigma to the tree's time variable (identity by default).
    """

    def __init__(
        self,
        x: torch.Tensor,
        sigma_min: float | torch.Tensor,
        sigma_max: float | torch.Tensor,
        seed: int | Sequence[int] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] = lambda s: s,
    ) -> None:
        try:
            import torchsde
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                "BrownianTreeNoiseSampler needs the 'torchsde' package; install it or use "
                "musicdiff.sampling.noise.GaussianNoiseSampler"
            ) from err
        self.transform = transform
        t0 = self.transform(torch.as_tensor(sigma_min))
        t1 = self.transform(torch.as_tensor(sigma_max))
        t0, t1, self._sign = self._sort(t0, t1)
        seeds, self.batched = _seed_list(seed, x.shape[0])
        w0 = torch.zeros_like(x[0] if self.batched else x)
        self.trees = [torchsde.BrownianTree(t0, w0, t1, entropy=s) for s in seeds]

    @staticmethod
    def _sort(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        return (a, b, 1) if a < b else (b, a, -1)

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        """Returns unit-variance noise for the interval between ``sigma`` and ``sigma_next``."""
        t0 = self.transform(torch.as_tensor(sigma))
        t1 = self.transform(torch.as_tensor(sigma_next))
        lo, hi, sign = self._sort(t0, t1)
        with warnings.catch_warnings():
            # torchsde rounds the tree's end points; float32 sigmas at the ends trip a harmless warning.
            warnings.filterwarnings("ignore", message="Should have t[ab]")
            w = torch.stack([tree(lo, hi) for tree in self.trees]) * (self._sign * sign)
        w = w if self.batched else w[0]
        return w / (t1 - t0).abs().sqrt()


class GaussianNoiseSampler:
    """Fresh i.i.d. standard normal noise per call, reproducible per seed.

    Args:
        x: Tensor whose shape, dtype and device the noise takes.
        sigma_min: Unused (accepted for the common noise-sampler factory signature).
        sigma_max: Unused.
        seed: One int for the batch, a list with one int per batch item, or None (random).
    """

    def __init__(
        self,
        x: torch.Tensor,
        sigma_min: float | torch.Tensor | None = None,
        sigma_max: float | torch.Tensor | None = None,
        seed: int | Sequence[int] | None = None,
    ) -> None:
        del sigma_min, sigma_max
        seeds, self.batched = _seed_list(seed, x.shape[0])
        self.shape = tuple(x.shape[1:]) if self.batched else tuple(x.shape)
        self.dtype, self.device = x.dtype, x.device
        self.generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]

    def __call__(self, sigma: torch.Tensor | None = None, sigma_next: torch.Tensor | None = None) -> torch.Tensor:
        """Returns standard normal noise shaped like ``x`` (arguments unused)."""
        draws = [torch.randn(self.shape, generator=g, dtype=torch.float32) for g in self.generators]
        noise = torch.stack(draws) if self.batched else draws[0]
        return noise.to(device=self.device, dtype=self.dtype)


def default_noise_sampler(
    x: torch.Tensor, sigma_min: float, sigma_max: float, seed: int | Sequence[int] | None = None
) -> NoiseSampler:
    """Brownian-tree noise when torchsde is installed, seeded Gaussian noise otherwise."""
    try:
        return BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=seed)
    except ImportError:
        warnings.warn("torchsde not installed: SDE samplers use GaussianNoiseSampler", stacklevel=2)
        return GaussianNoiseSampler(x, sigma_min, sigma_max, seed=seed)
