"""Load the stable-audio-tools reference (SAT) for parity tests; missing, a skip locally, a failure on CI.

SAT's model modules import ``torchaudio`` (no wheel matches the CPU torch used here) and the full
``k_diffusion`` package (torchvision, scikit-image ...); :mod:`musicdiff.reference.sat_reference`
explains how only its model code is loaded, unmodified. ``make setup`` installs SAT with
``--no-deps`` plus the small packages its model code imports, so CI runs these tests.
"""

from __future__ import annotations

import types

from musicdiff.reference.sat_reference import ReferenceUnavailable, load_stable_audio_tools
from tests.helpers import skip_or_fail


def load_sat() -> types.ModuleType:
    """Return the ``stable_audio_tools`` package; missing, skip the calling test (module), or fail if ``CI=true``."""
    try:
        return load_stable_audio_tools()
    except ReferenceUnavailable as exc:
        skip_or_fail(f"stable-audio-tools reference unavailable: {exc}")
        raise  # unreachable: skip_or_fail always raises


def randomize_(module, seed: int = 0) -> None:
    """Overwrite every parameter with well-scaled random values (no zero-initialised branches).

    Matrices get ``N(0, 1/fan_in)``, weight-norm magnitudes ``U(0.5, 1)``, vectors small noise
    around their role's neutral value (norm gains near 1, log-scale Snake alpha near 0, beta near 1.5).
    """
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("weight_g", "original0"):
                p.copy_(0.5 + 0.5 * torch.rand(p.shape, generator=gen))
            elif p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(fan_in))
            elif leaf == "gamma":
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif leaf == "beta":  # SnakeBeta log-magnitude: a gentle nonlinearity keeps the random VAE's gain low
                p.copy_(1.5 + 0.1 * torch.randn(p.shape, generator=gen))
            elif leaf == "weights":  # learned Fourier frequencies
                p.copy_(torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
