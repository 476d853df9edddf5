"""Adapter files: small safetensors holding only adapter weights, with their spec and base identity.

Layout: tensors ``<layer name>.<param>`` (``transformer.layers.0.self_attn.to_qkv.lora_A`` ...) and
string metadata ``format`` (``musicdiff-adapter``), ``version``, ``spec`` (JSON of the
:class:`AdapterSpec`), ``layers`` (JSON list of target names) and ``base_hash`` (SHA-256 of the base
DiT weights, :func:`base_weights_hash`). Nothing is pickled, so loading never executes code; a file
made for another base is refused with both hashes in the message.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from musicdiff.adapters.spec import AdapterError, AdapterSpec, parse_adapter_specs
from musicdiff.adapters.stack import _slot, attach_adapter, base_weights_hash, stack_of

FORMAT = "musicdiff-adapter"
VERSION = "1"


class AdapterBaseMismatchError(AdapterError):
    """The adapter file was trained on different base weights than the DiT it is loaded into."""


def adapter_tensors(dit: nn.Module, name: str) -> dict[str, torch.Tensor]:
    """``{"<layer>.<param>": tensor}`` of adapter ``name`` (parameters and LoRA-XS's frozen factors)."""
    stack = stack_of(dit)
    if stack is None or name not in stack.sets:
        raise AdapterError(f"the DiT has no adapter named {name!r}")
    s = stack.sets[name]
    out = {}
    for n in s.names:
        for k, v in s.layer(n).state_dict().items():
            out[f"{n}.{k}"] = v.detach().float().cpu().contiguous()
    return out


def save_adapter(path: str | Path, dit: nn.Module, name: str | None = None, base_hash: str | None = None,
                 tensors: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write adapter ``name`` of ``dit`` to ``path`` atomically (temp file, fsync, rename).

    Args:
        path: the ``.safetensors`` file to write (its directory is created).
        dit: the adapted DiT.
        name: which adapter (default: the only one).
        base_hash: :func:`base_weights_hash` of the base (computed from ``dit`` when None).
        tensors: weights to write instead of the live ones (e.g. the EMA's), keyed as
            :func:`adapter_tensors`.

    Returns:
        The written path.

    Raises:
        AdapterError: no such adapter, mismatching ``tensors`` keys, or non-finite weights.
    """
    stack = stack_of(dit)
    if stack is None or not stack.sets:
        raise AdapterError("the DiT has no adapter to save")
    if name is None:
        if len(stack.sets) != 1:
            raise AdapterError(f"the DiT has several adapters {list(stack.sets)}: name the one to save")
        name = next(iter(stack.sets))
    live = adapter_tensors(dit, name)
    if tensors is not None:
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}
        if set(tensors) != set(live):
            missing, unexpected = sorted(set(live) - set(tensors))[:3], sorted(set(tensors) - set(live))[:3]
            raise AdapterError(f"adapter weights to save do not match adapter {name!r}: "
                               f"missing {missing}, unexpected {unexpected}")
        live = tensors
    bad = [k for k, v in live.items() if not torch.isfinite(v).all()]
    if bad:
        raise AdapterError(f"adapter {name!r} has non-finite weights in {bad[:3]}: not saved")
    s = stack.sets[name]
    meta = {"format": FORMAT, "version": VERSION, "spec": s.spec.to_json(), "layers": json.dumps(s.names),
            "base_hash": base_hash or base_weights_hash(dit)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(live, tmp, metadata=meta)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def read_adapter(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Metadata (``spec`` as :class:`AdapterSpec`, ``layers``, ``base_hash``) and tensors of an adapter file."""
    path = Path(path)
    if not path.is_file():
        raise AdapterError(f"adapter file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except AdapterError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad file
        raise AdapterError(f"{path}: not a readable safetensors adapter file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise AdapterError(f"{path}: not a musicdiff adapter file (format {meta.get('format')!r})")
    try:
        info = {"spec": AdapterSpec.from_json(meta["spec"]), "layers": list(json.loads(meta["layers"])),
                "base_hash": str(meta["base_hash"]), "version": meta.get("version")}
    except (KeyError, ValueError, TypeError) as exc:
        raise AdapterError(f"{path}: broken adapter metadata ({exc})") from None
    return info, tensors


def load_adapters(dit: nn.Module, specs: Iterable[Any], base_hash: str | None = None) -> list[str]:
    """Attach the adapter files ``specs`` (``["a.safetensors:0.8", ...]`` or ``(path, scale)``) to ``dit``.

    Adapters stack: the output of each adapted layer is ``W x + Σ_i s_i ΔW_i x``. Each is named by
    its file stem (``a``, then ``a_1`` ... for repeats).

    Args:
        dit: the base DiT (weights loaded; adapters already attached are kept).
        specs: adapter files with scales.
        base_hash: the DiT's :func:`base_weights_hash` if known (computed once otherwise).

    Returns:
        The names of the attached adapters.

    Raises:
        AdapterBaseMismatchError: a file recorded a different base hash.
        AdapterError: a missing or malformed file, or layers the DiT lacks.
    """
    names = []
    for path, scale in parse_adapter_specs(specs):
        info, tensors = read_adapter(path)
        if base_hash is None:
            base_hash = base_weights_hash(dit)
        if info["base_hash"] != base_hash:
            raise AdapterBaseMismatchError(
                f"{path}: adapter was trained on a base DiT with weight hash {info['base_hash']}, "
                f"but this DiT's weights hash to {base_hash}; load the base it was trained on")
        stack = stack_of(dit)
        stem = path.stem.replace(".", "_") or "adapter"
        name, i = stem, 1
        while stack is not None and (name in stack.sets or hasattr(stack.sets, name)):
            name, i = f"{stem}_{i}", i + 1
        s = attach_adapter(dit, info["spec"], name, layers=info["layers"])
        state, used = {}, set()
        for layer in info["layers"]:
            prefix = f"{layer}."
            for k, v in tensors.items():
                if k.startswith(prefix) and "." not in k[len(prefix):]:
                    state[f"{_slot(layer)}.{k[len(prefix):]}"] = v
                    used.add(k)
        expected = s.layers.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(tensors) - used) + sorted(set(state) - set(expected))
        shapes = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
        if missing or unexpected or shapes:
            stack_of(dit).sets.pop(name)
            raise AdapterError(f"{path}: adapter weights do not fit this DiT: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}, wrong shapes {shapes[:3]}")
        s.layers.load_state_dict(state)
        s.requires_grad_(False)
        s.scale = scale
        names.append(name)
    return names
