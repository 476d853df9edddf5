"""Load the stable-audio-tools (SAT) reference implementation for parity checks and benchmarks.

SAT (PyPI ``stable-audio-tools``, installed by ``make setup`` with ``--no-deps``) is the
published implementation of Stable Audio Open. Its model modules import two things this
environment cannot provide, neither of which the model code paths we compare ever execute:

* ``torchaudio``: imported at module level by ``models.autoencoders``, ``models.pretransforms``,
  ``inference.utils``/``generation`` and ``data.utils`` for resampling of user audio and
  dataset loading. No torchaudio wheel matches the CPU torch pinned here, so when it is missing
  a stub module is registered while SAT's modules import (then removed again) whose
  ``transforms.*`` classes raise on use. The Oobleck
  autoencoder, DiT, conditioners and k-diffusion sampling never touch it, so the reference
  numbers come from SAT's own, unmodified model code (we prefer this to diffusers'
  ``AutoencoderOobleck`` re-implementation: it keeps SAT's exact checkpoint key layout and
  lets one ``create_model_from_config`` build the whole Stable Audio Open model).
* ``k_diffusion``: the package ``__init__`` pulls its image-training extras (torchvision,
  scikit-image, clean-fid ...). SAT only uses ``k_diffusion.sampling`` and
  ``k_diffusion.external``, which need ``utils.append_dims`` alone, so when the full import
  fails those two modules are loaded from the installed files under a package shell.

SAT's ``T5Conditioner`` fetches ``t5_model_name`` from the Hugging Face hub and runs it in
float16. :func:`build_sat_model` redirects those loads to a local directory (nothing is ever
downloaded) and can keep the encoder in float32, since musicdiff runs T5 in float32 and the
T5 weights are not part of a SAT checkpoint.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Iterator
from typing import Any

import torch

SAT_PACKAGE = "stable_audio_tools"
SAT_VERSION = "0.0.19"  # the version the parity tests pin (Makefile)


class ReferenceUnavailable(ImportError):
    """stable-audio-tools (or a module its model code needs) is not installed."""


def _append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
    """``k_diffusion.utils.append_dims``: append singleton dims until ``x`` has ``target_dims``."""
    dims_to_append = target_dims - x.ndim
    if dims_to_append < 0:
        raise ValueError(f"input has {x.ndim} dims but target_dims is {target_dims}, which is less")
    return x[(...,) + (None,) * dims_to_append]


def load_k_diffusion() -> types.ModuleType:
    """Return ``k_diffusion`` with its own ``sampling`` and ``external`` modules (see module doc)."""
    name = "k_diffusion"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name or importlib.util.find_spec(name) is None:
            raise ReferenceUnavailable("k-diffusion is not installed (make setup installs it with --no-deps)") from exc
    except ImportError:
        pass
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]
    spec = importlib.util.find_spec(name)
    shell = types.ModuleType(name)
    shell.__path__ = list(spec.submodule_search_locations)
    shell.__spec__ = spec
    utils = types.ModuleType(f"{name}.utils")
    utils.append_dims = _append_dims
    sys.modules[name] = shell
    sys.modules[f"{name}.utils"] = utils
    shell.utils = utils
    shell.sampling = importlib.import_module(f"{name}.sampling")
    shell.external = importlib.import_module(f"{name}.external")
    return shell


class _Unavailable:
    """Placeholder for a torchaudio class: importing works, using it raises."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            f"torchaudio.transforms.{type(self).__name__} is a stub (torchaudio is not installed); "
            "musicdiff's parity code never resamples audio through stable-audio-tools"
        )


@contextlib.contextmanager
def _torchaudio_stub() -> Iterator[None]:
    """While SAT imports, provide a minimal ``torchaudio`` (``transforms`` placeholders) if it is absent.

    The stub is removed from ``sys.modules`` afterwards: SAT's modules keep the names they bound,
    and other libraries (``transformers`` checks for torchaudio) still see it as not installed.
    """
    if importlib.util.find_spec("torchaudio") is not None:
        yield
        return
    torchaudio = types.ModuleType("torchaudio")
    transforms = types.ModuleType("torchaudio.transforms")
    torchaudio.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None, is_package=True)
    transforms.__spec__ = importlib.machinery.ModuleSpec("torchaudio.transforms", None)
    for cls in ("Resample", "Spectrogram", "MelSpectrogram"):
        setattr(transforms, cls, type(cls, (_Unavailable,), {}))
    torchaudio.transforms = transforms
    sys.modules["torchaudio"] = torchaudio
    sys.modules["torchaudio.transforms"] = transforms
    try:
        yield
    finally:
        for name in ("torchaudio.transforms", "torchaudio"):
            if sys.modules.get(name) in (torchaudio, transforms):
                del sys.modules[name]


def load_stable_audio_tools() -> types.ModuleType:
    """Import ``stable_audio_tools`` with the model, conditioner and inference modules loaded.

    Returns:
        The package; ``.models.factory``, ``.models.conditioners``, ``.models.autoencoders``,
        ``.models.dit`` and ``.inference.generation`` are imported.

    Raises:
        ReferenceUnavailable: the package or one of its model-code dependencies is missing.
    """
    if importlib.util.find_spec(SAT_PACKAGE) is None:
        raise ReferenceUnavailable(
            f"stable-audio-tools is not installed (make setup installs stable-audio-tools=={SAT_VERSION} --no-deps)"
        )
    load_k_diffusion()
    try:
        with _torchaudio_stub():
            for mod in ("models.factory", "models.conditioners", "models.autoencoders", "models.dit",
                        "models.diffusion", "models.pretransforms", "inference.generation"):
                importlib.import_module(f"{SAT_PACKAGE}.{mod}")
    except ModuleNotFoundError as exc:
        raise ReferenceUnavailable(f"stable-audio-tools needs '{exc.name}' (see the Makefile's setup recipe)") from exc
    return sys.modules[SAT_PACKAGE]


# Imported at module level by SAT's training modules for logging, DAC losses and image models; the
# training steps compared here never call them.
_TRAINING_IMPORT_ONLY = ("wandb", "audiotools", "torchvision")


class _ImportOnly(types.ModuleType):
    """A placeholder module for :data:`_TRAINING_IMPORT_ONLY`: attributes exist, calling them raises."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _ImportOnly(f"{self.__name__}.{name}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self.__name__} is a placeholder: it is not installed here (stable-audio-tools "
                           f"training code imports it, the parity tests never use it)")


class _ImportOnlyFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, name, path, target=None):  # noqa: ARG002
        if name.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _ImportOnly(spec.name)

    def exec_module(self, module) -> None:
        pass


def load_sat_training(*modules: str) -> types.ModuleType:
    """Import SAT's training modules (``training.diffusion``, ``training.arc`` ...) for parity tests.

    They need ``pytorch_lightning``, ``auraloss`` and ``ema_pytorch`` (installed by ``make setup``
    with ``--no-deps``); ``wandb``, ``audiotools`` and ``torchvision`` are only imported by them, so
    while they import, missing ones are placeholders (removed from ``sys.modules`` afterwards).

    Returns:
        The ``stable_audio_tools`` package with the requested ``training.*`` modules imported.

    Raises:
        ReferenceUnavailable: a real dependency is missing.
    """
    load_stable_audio_tools()
    finder = _ImportOnlyFinder({n for n in _TRAINING_IMPORT_ONLY if importlib.util.find_spec(n) is None})
    sys.meta_path.insert(0, finder)
    before = set(sys.modules)
    try:
        with _torchaudio_stub():
            for mod in modules or ("training.diffusion",):
                importlib.import_module(f"{SAT_PACKAGE}.{mod}")
    except ModuleNotFoundError as exc:
        raise ReferenceUnavailable(f"stable-audio-tools' training code needs '{exc.name}' "
                                   f"(see the Makefile's setup recipe)") from exc
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:
            if isinstance(sys.modules.get(name), _ImportOnly):
                del sys.modules[name]
    return sys.modules[SAT_PACKAGE]


@contextlib.contextmanager
def local_t5(t5_path: str | None, dtype: torch.dtype | None = torch.float32) -> Iterator[None]:
    """Redirect SAT's ``T5EncoderModel``/``AutoTokenizer.from_pretrained`` to a local directory.

    Inside the context every T5 load (whatever name SAT asks for) reads ``t5_path`` with
    ``local_files_only=True``; under a meta default device the encoder is built from its config
    without weights. ``dtype`` replaces SAT's float16 cast of the encoder (None keeps float16).

    Args:
        t5_path: local T5 directory; None leaves ``from_pretrained`` untouched.
        dtype: dtype the loaded encoder is finally cast to.
    """
    if t5_path is None:
        yield
        return
    from transformers import AutoTokenizer, T5EncoderModel

    load_model, load_tok = T5EncoderModel.from_pretrained.__func__, AutoTokenizer.from_pretrained.__func__
    module_to = T5EncoderModel.to

    def model_from_pretrained(cls, _name, *args, **kwargs):
        if torch.get_default_device().type == "meta":
            return cls(cls.config_class.from_pretrained(t5_path, local_files_only=True))
        return load_model(cls, t5_path, *args, **{**kwargs, "local_files_only": True})

    def tok_from_pretrained(cls, _name, *args, **kwargs):
        return load_tok(cls, t5_path, *args, **{**kwargs, "local_files_only": True})

    def to(self, *args, **kwargs):
        if dtype is not None and args and args[0] == torch.float16:
            args = (dtype, *args[1:])
        return module_to(self, *args, **kwargs)

    patches = [(T5EncoderModel, "from_pretrained", classmethod(model_from_pretrained)),
               (AutoTokenizer, "from_pretrained", classmethod(tok_from_pretrained)), (T5EncoderModel, "to", to)]
    saved = [(cls, name, cls.__dict__.get(name)) for cls, name, _ in patches]
    for cls, name, value in patches:
        setattr(cls, name, value)
    try:
        yield
    finally:
        for cls, name, original in saved:
            if original is None:
                delattr(cls, name)  # it was inherited
            else:
                setattr(cls, name, original)


def build_sat_model(model_config: dict, t5_path: str | None = None,
                    t5_dtype: torch.dtype | None = torch.float32) -> torch.nn.Module:
    """Build a SAT model from its ``model_config.json`` dict with SAT's own factory.

    Args:
        model_config: the parsed ``model_config.json`` (e.g. :func:`stable_audio_open_config`).
        t5_path: local T5 directory used for any T5 conditioner (see :func:`local_t5`).
        t5_dtype: dtype of SAT's T5 encoder (SAT itself uses float16).

    Returns:
        The model from ``stable_audio_tools.create_model_from_config`` (random weights).
    """
    sat = load_stable_audio_tools()
    with local_t5(t5_path, t5_dtype):
        return sat.models.factory.create_model_from_config(model_config)
