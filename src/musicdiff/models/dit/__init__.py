"""Diffusion transformer (SA2 DiT): rotary attention blocks over latent frames."""

from musicdiff.models.dit.transformer import (
    ContinuousTransformer,
    DiffusionTransformer,
    FourierFeatures,
)

__all__ = ["ContinuousTransformer", "DiffusionTransformer", "FourierFeatures"]
