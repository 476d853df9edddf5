"""Inference fast paths of the VAE and the DiT, applied from outside by one switch.

``with fast_inference(autoencoder, dit): ...`` (see :mod:`musicdiff.models.inference.switch`).
The model packages (``models/autoencoder``, ``models/dit``) know nothing of this package.
"""

from musicdiff.models.inference.packed_gemm import packed_gemm_available, packed_linears
from musicdiff.models.inference.switch import fast_inference

__all__ = ["fast_inference", "packed_gemm_available", "packed_linears"]
