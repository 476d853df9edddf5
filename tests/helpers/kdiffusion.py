"""k-diffusion's reference samplers for parity tests; missing, it is a skip locally and a failure on CI.

The loading itself (k-diffusion's own ``sampling``/``external`` modules without its torchvision-bound
package ``__init__``) lives in :func:`musicdiff.reference.sat_reference.load_k_diffusion`, shared with
the stable-audio-tools parity code.
"""

from __future__ import annotations

import types

from musicdiff.reference.sat_reference import ReferenceUnavailable
from musicdiff.reference.sat_reference import load_k_diffusion as _load
from tests.helpers import skip_or_fail


def load_k_diffusion() -> types.ModuleType:
    """Return ``k_diffusion`` (package or shell with its unmodified sampler code).

    Absent, the calling test (module) is skipped, or fails when ``CI=true``.
    """
    try:
        return _load()
    except ReferenceUnavailable as exc:
        skip_or_fail(f"k-diffusion reference unavailable: {exc}")
        raise  # unreachable: skip_or_fail always raises
