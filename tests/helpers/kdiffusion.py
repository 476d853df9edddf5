"""k-diffusion's reference samplers for parity tests, or a skip when it is not installed.

The loading itself (k-diffusion's own ``sampling``/``external`` modules without its torchvision-bound
package ``__init__``) lives in :func:`musicdiff.reference.sat_reference.load_k_diffusion`, shared with
the stable-audio-tools parity code.
"""

from __future__ import annotations

import types

import pytest

from musicdiff.reference.sat_reference import ReferenceUnavailable
from musicdiff.reference.sat_reference import load_k_diffusion as _load


def load_k_diffusion() -> types.ModuleType:
    """Return ``k_diffusion`` (package or shell with its unmodified sampler code); skip if absent."""
    try:
        return _load()
    except ReferenceUnavailable as exc:
        pytest.skip(str(exc), allow_module_level=True)
