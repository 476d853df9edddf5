"""musicdiff: long-form text-to-music generation with latent diffusion (Stable Audio 2)."""

__version__ = "0.1.0"
