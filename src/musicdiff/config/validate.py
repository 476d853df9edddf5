"""Check a composed config against its schema and the signatures of its ``_target_`` nodes.

Hydra only rejects unknown keys given on the command line; a misspelt key in a YAML file (or one
added with ``+key=``) would otherwise reach the constructor as a confusing ``TypeError`` much later,
possibly after a long model build. Likewise a value of the wrong type (``trainer.max_steps=abc``)
would only fail inside the constructor. This walks the config once at start and fails with one
line naming the key path: unknown keys of structured (dataclass) nodes and of ``_target_`` nodes
get a "did you mean" hint; values are checked against the target's annotations where that is
cheap (``int``, ``float``, ``bool``, ``str``, ``Literal``, ``Optional``/unions of those; anything
else is left to the constructor).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import sys
import types
import typing
from typing import Any, Iterator, Literal, Union

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


def _walk_structured(node: Any, path: str) -> Iterator[tuple[str, DictConfig, type]]:
    """Every DictConfig node backed by a dataclass schema (the root configs, ``paths`` ...)."""
    if not isinstance(node, DictConfig) or node._is_none() or node._is_missing():
        return
    schema = OmegaConf.get_type(node)
    if schema is not None and dataclasses.is_dataclass(schema):
        yield path, node, schema
    for key in node.keys():
        if not OmegaConf.is_missing(node, key):
            yield from _walk_structured(node._get_node(key), f"{path}.{key}" if path else str(key))


def _unknown_key(path: str, key: Any, valid: list[str], owner: str) -> ConfigError:
    hint = difflib.get_close_matches(str(key), valid, n=1)
    extra = f" Did you mean '{hint[0]}'?" if hint else ""
    name = f"{path}.{key}" if path else str(key)
    return ConfigError(f"Unknown config key '{name}': {owner} accepts {sorted(valid)}.{extra}")


def _hints(fn: Any) -> dict[str, Any]:
    """Evaluated parameter annotations of ``fn`` (a class: its ``__init__``); unresolvable ones are left out."""
    func = fn.__init__ if isinstance(fn, type) else fn
    try:
        return typing.get_type_hints(func)
    except Exception:  # noqa: BLE001 - names imported only for type checking: evaluate one by one
        pass
    hints = {}
    namespace = {**vars(typing), **vars(sys.modules.get(getattr(func, "__module__", ""), typing))}
    for name, ann in getattr(func, "__annotations__", {}).items():
        try:
            hints[name] = eval(ann, namespace) if isinstance(ann, str) else ann  # noqa: S307 - annotations only
        except Exception:  # noqa: BLE001 - leave this one to the constructor
            continue
    return hints


def _accepts(tp: Any, value: Any) -> bool | None:
    """Whether ``value`` fits annotation ``tp``: True/False for cheap types, None when not checked."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin is Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        verdicts = [_accepts(arm, value) for arm in typing.get_args(tp)]
        return True if any(v is True for v in verdicts) else (None if None in verdicts else False)
    if origin is Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if tp in (int, float, bool, str):
        if value is None:
            return False
        if tp is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if tp is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, tp)
    return None


def _check_value(path: str, key: str, node: DictConfig, param: inspect.Parameter, tp: Any, target: str) -> None:
    if OmegaConf.is_interpolation(node, key) or OmegaConf.is_missing(node, key):
        return
    child = node._get_node(key)
    value = child if isinstance(child, (DictConfig, ListConfig)) and not child._is_none() else child._value()
    if value is None and param.default is None:
        return
    if _accepts(tp, value) is False:
        shown = "a mapping" if isinstance(value, DictConfig) else "a list" if isinstance(value, ListConfig) \
            else repr(value)
        name = getattr(tp, "__name__", None) if typing.get_origin(tp) is None else None
        raise ConfigError(f"Config value {path}.{key}={shown} has the wrong type: {target} expects "
                          f"{name or str(tp).replace('typing.', '')}")


def _forwarded_keys(cls: type) -> list[str] | None:
    """Keyword names a musicdiff class whose ``__init__`` takes ``**kwargs`` passes on to its base classes'
    ``__init__`` (e.g. ``ARCTask`` -> ``DiffusionTask``): the explicit names up the MRO until a musicdiff
    ``__init__`` without ``**kwargs``; None where that chain leaves the package (anything may be accepted)."""
    names: list[str] = []
    for base in cls.__mro__[1:]:
        if "__init__" not in vars(base):
            continue
        if not base.__module__.startswith("musicdiff."):
            return None
        try:
            params = inspect.signature(base.__init__).parameters
        except (TypeError, ValueError):
            return None
        names += [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"]
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            return names
    return None


def validate_targets(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for an unknown key or a value of the wrong type, before anything is built.

    Checks (1) the keys of every structured (dataclass-schema) node, which Hydra's ``+key=value``
    can extend, (2) the keys of every ``_target_`` node against its callable's signature, and
    (3) those keys' values against the callable's annotations where cheap (see the module doc).

    Args:
        cfg: a composed config (interpolations need not be resolved).

    Raises:
        ConfigError: one line naming the key path, the target and the closest valid key or the
            expected type.
    """
    for path, node, schema in _walk_structured(cfg, ""):
        fields = [f.name for f in dataclasses.fields(schema)]
        for key in node.keys():
            if key not in fields:
                raise _unknown_key(path, key, fields, f"the {schema.__name__} schema")
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
        valid = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        forwarded: list[str] = []
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            if not isinstance(fn, type) or (keys := _forwarded_keys(fn)) is None:
                continue
            forwarded = [k for k in keys if k not in valid]
        hints = None
        for key in node.keys():
            if key in _HYDRA_KEYS or key in forwarded:  # a base class's argument: its type is left to it
                continue
            if key not in valid:
                raise _unknown_key(path, key, valid + forwarded, str(target))
            hints = _hints(fn) if hints is None else hints
            if key in hints:
                _check_value(path, str(key), node, params[key], hints[key], str(target))
