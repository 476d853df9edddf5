"""Check every ``_target_`` node of a config against the signature of its target.

Hydra only rejects unknown keys given on the command line; a misspelt key in a YAML file (or one
added with ``+key=``) would otherwise reach the constructor as a confusing ``TypeError`` much later,
possibly after a long model build. This walks the config once at start and fails with the full
key path and a "did you mean" hint.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Iterator

from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf

_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


class ConfigError(ValueError):
    """A config names a key its target does not accept, or a target that does not exist."""


def _walk(node: Any, path: str) -> Iterator[tuple[str, DictConfig]]:
    if isinstance(node, (DictConfig, ListConfig)) and (node._is_none() or node._is_missing()):
        return
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        for key in node.keys():
            child = node._get_node(key)
            if OmegaConf.is_missing(node, key):
                continue
            yield from _walk(child if isinstance(child, (DictConfig, ListConfig)) else None,
                             f"{path}.{key}" if path else str(key))
    elif isinstance(node, ListConfig):
        for i, child in enumerate(node):
            yield from _walk(child, f"{path}[{i}]")


def validate_targets(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` if any ``_target_`` node has keys its callable does not accept.

    Args:
        cfg: a composed config (interpolations need not be resolved).

    Raises:
        ConfigError: naming the key path, the target and the closest valid key.
    """
    for path, node in _walk(cfg, ""):
        target = node._get_node("_target_")._value()
        try:
            fn = get_method(target) if not isinstance(target, type) else target
        except Exception as exc:  # noqa: BLE001 - hydra raises several types here
            raise ConfigError(f"{path}._target_: cannot import '{target}': {exc}") from exc
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            continue
        params = sig.parameters
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            continue
        valid = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for key in node.keys():
            if key in _HYDRA_KEYS or key in valid:
                continue
            hint = difflib.get_close_matches(str(key), valid, n=1)
            extra = f" Did you mean '{hint[0]}'?" if hint else ""
            raise ConfigError(
                f"Unknown config key '{path}.{key}': {target} accepts {sorted(valid)}.{extra}"
            )
