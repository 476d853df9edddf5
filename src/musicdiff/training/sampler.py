"""Deprecated name: the data order lives in :mod:`musicdiff.training.data_order` (not to be confused
with the diffusion samplers of :mod:`musicdiff.sampling`). Kept so existing imports keep working."""

from musicdiff.training.data_order import ResumableShardedSampler

__all__ = ["ResumableShardedSampler"]
