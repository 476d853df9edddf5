"""Load the reference samplers of the ``k-diffusion`` package for parity tests.

k-diffusion's package ``__init__`` imports its image-training extras (torchvision, clean-fid, CLIP,
wandb...), and torchvision has no build matching the CPU torch wheel used here. Its ``sampling`` and
``external`` modules only need ``utils.append_dims`` from those extras, so when the full import fails
we load the two modules from the installed files under a package shell whose ``utils`` provides just
that function. The code under test is compared with k-diffusion's own, unmodified sampler code.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest

_NAME = "k_diffusion"


def _append_dims(x, target_dims):
    """k_diffusion.utils.append_dims: append singleton dimensions until ``x`` has ``target_dims``."""
    dims_to_append = target_dims - x.ndim
    if dims_to_append < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * dims_to_append]


def load_k_diffusion() -> types.ModuleType:
    """Return a ``k_diffusion`` module whose ``sampling`` and ``external`` are the package's own code.

    Skips the calling test when k-diffusion is not installed (``make setup`` installs it).
    """
    try:
        module = importlib.import_module(_NAME)
        return module
    except ModuleNotFoundError as exc:
        if exc.name == _NAME or importlib.util.find_spec(_NAME) is None:
            pytest.skip("k-diffusion is not installed (make setup installs it with --no-deps)", allow_module_level=True)
    except ImportError:
        pass
    for key in [k for k in sys.modules if k == _NAME or k.startswith(_NAME + ".")]:
        del sys.modules[key]
    spec = importlib.util.find_spec(_NAME)
    shell = types.ModuleType(_NAME)
    shell.__path__ = list(spec.submodule_search_locations)
    shell.__spec__ = spec
    utils = types.ModuleType(f"{_NAME}.utils")
    utils.append_dims = _append_dims
    sys.modules[_NAME] = shell
    sys.modules[f"{_NAME}.utils"] = utils
    shell.utils = utils
    shell.sampling = importlib.import_module(f"{_NAME}.sampling")
    shell.external = importlib.import_module(f"{_NAME}.external")
    return shell
