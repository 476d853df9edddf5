"""Allow-list for the ``_target_`` nodes of configs read from exports and checkpoints.

An export's ``config.yaml`` is data written by someone else. ``hydra.utils.instantiate`` would call
whatever callable it names (``torch.load`` with ``weights_only: false``, ``os.system`` ...), so the
loading layer checks every ``_target_`` of the model groups *before* anything is imported from
outside musicdiff or instantiated: a target must be a class defined in an allowed musicdiff
package (``musicdiff.models``: networks and conditioners; ``musicdiff.diffusion``: objectives and
timestep densities). Functions (``torch.load`` reached through a musicdiff module's namespace)
and foreign classes are refused. Resolving a target imports only musicdiff's own modules.
"""

from __future__ import annotations

import importlib
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from musicdiff.training.checkpoint import CheckpointError

ALLOWED_PACKAGES = ("musicdiff.models.", "musicdiff.diffusion.")


class UnsafeConfigError(CheckpointError):
    """A config read from a file names a callable outside the allow-list."""


def _walk_targets(node: Any, path: str):
    if isinstance(node, DictConfig):
        if node._is_none() or node._is_missing():
            return
        for key in node.keys():
            child = node._get_node(key)
            if key == "_target_":
                yield path, child._value() if hasattr(child, "_value") else child
            elif isinstance(child, (DictConfig, ListConfig)):
                yield from _walk_targets(child, f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        if node._is_none() or node._is_missing():
            return
        for i in range(len(node)):
            child = node._get_node(i)
            if isinstance(child, (DictConfig, ListConfig)):
                yield from _walk_targets(child, f"{path}[{i}]")


def _resolve_allowed(target: Any, where: str, source: str) -> type:
    if not isinstance(target, str) or not target.startswith(ALLOWED_PACKAGES):
        raise UnsafeConfigError(f"{source}: refusing {where}._target_={target!r}: models loaded from files may only "
                                f"name musicdiff model and objective classes ({', '.join(p + '*' for p in ALLOWED_PACKAGES)})")
    parts = target.split(".")
    obj: Any = None
    for cut in range(len(parts) - 1, 1, -1):  # longest importable module prefix, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr, None)
        break
    if not (isinstance(obj, type) and obj.__module__.startswith(ALLOWED_PACKAGES)):
        raise UnsafeConfigError(f"{source}: refusing {where}._target_={target!r}: not a class defined in "
                                f"{' or '.join(p.rstrip('.') for p in ALLOWED_PACKAGES)}")
    return obj


def check_targets(config: DictConfig, source: str) -> None:
    """Raise :class:`UnsafeConfigError` unless every ``_target_`` in ``config`` is an allowed model class.

    Args:
        config: the model groups read from a file (``autoencoder``, ``dit``, ``conditioner`` ...).
        source: the file, for the message.
    """
    for where, target in _walk_targets(config, ""):
        _resolve_allowed(target, where or "<root>", source)


def safe_instantiate(node: DictConfig, source: str) -> Any:
    """``hydra.utils.instantiate`` after :func:`check_targets` (the only way files become modules)."""
    from hydra.utils import instantiate

    check_targets(node, source)
    return instantiate(node)
