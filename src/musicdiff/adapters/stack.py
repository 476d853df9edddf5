"""Attach adapters to a DiT: forward hooks on its linear layers, per-sample noise-level gates, merging.

The base layers are not replaced: each targeted ``nn.Linear`` gets a forward hook that adds
``Σ_i s_i·g_i·Δy_i`` (scale ``s_i`` and per-sample gate ``g_i`` of adapter ``i``) to its output, so the
base ``state_dict`` keys (and stable-audio-tools' names) are unchanged, several adapters stack, and
an adapter at scale 0 (or outside its noise-level interval) leaves the output bit-identical. The
adapter weights live in ``dit.adapters`` (an :class:`AdapterStack`), hence move with ``dit.to()``,
are seen by DDP/DeepSpeed as ordinary parameters and are saved as ``adapters.sets.<name>.…``.

A forward pre-hook on the DiT reads the diffusion time ``t`` of each call and sets every adapter's
gate: on for samples with ``t`` in its ``t_interval`` (the noise-level interval of SA3-style
adapters), off otherwise.
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any, Iterator

import torch
from torch import nn

from musicdiff.adapters.layers import make_layer
from musicdiff.adapters.spec import AdapterError, AdapterSpec

STACK_ATTR = "adapters"
ADAPTER_PREFIX = f"{STACK_ATTR}."


def _slot(name: str) -> str:
    return name.replace(".", "__")


class AdapterSet(nn.Module):
    """One adapter: a :class:`AdapterSpec`, its per-layer modules, a scale and the current gate.

    Args:
        spec: the adapter's spec.
        layers: target module name -> base ``nn.Linear``.
    """

    def __init__(self, spec: AdapterSpec, layers: dict[str, nn.Linear]) -> None:
        super().__init__()
        self.spec = spec
        self.names = list(layers)
        self.layers = nn.ModuleDict({_slot(n): make_layer(spec.kind, m, spec.rank, spec.scaling, spec.dropout)
                                     for n, m in layers.items()})
        self.scale = 1.0
        self.gate: Any = None  # None: on for every sample; False: off; tensor [B]: per sample

    def layer(self, name: str) -> nn.Module | None:
        """The adapter module of the target ``name`` (None when this adapter does not touch it)."""
        slot = _slot(name)
        return self.layers[slot] if slot in self.layers else None

    def set_gate(self, t: torch.Tensor | None) -> None:
        """Gate from the diffusion times ``t`` ``[B]`` of the current forward."""
        if self.spec.always_on or t is None:
            self.gate = None
            return
        lo, hi = self.spec.t_interval
        inside = (t >= lo) & (t <= hi)
        self.gate = None if bool(inside.all()) else (False if not bool(inside.any()) else inside)


class _LinearHook:
    """Forward hook of one targeted linear layer (an object, so ``deepcopy`` keeps it consistent)."""

    def __init__(self, stack: "AdapterStack", name: str) -> None:
        self.stack, self.name = stack, name

    def __call__(self, module: nn.Linear, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return self.stack.add_deltas(self.name, module, args[0], output)


class _TimeHook:
    """Forward pre-hook of the DiT: reads ``t`` and sets each adapter's per-sample gate."""

    def __init__(self, stack: "AdapterStack") -> None:
        self.stack = stack

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        t = kwargs.get("t", args[1] if len(args) > 1 else None)
        x = kwargs.get("x", args[0] if args else None)
        if t is not None:
            t = torch.as_tensor(t).reshape(-1)
            if x is not None and t.numel() == 1:
                t = t.expand(x.shape[0])
        for s in self.stack.sets.values():
            s.set_gate(t)


class AdapterStack(nn.Module):
    """All adapters attached to one DiT (``dit.adapters``), applied in insertion order."""

    def __init__(self) -> None:
        super().__init__()
        self.sets = nn.ModuleDict()
        self.hooked: set[str] = set()

    def add_deltas(self, name: str, module: nn.Linear, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out + Σ_i s_i·g_i·Δy_i`` over the adapters touching layer ``name`` (each from the base output)."""
        base = out
        for key, s in self.sets.items():
            layer = s.layer(name)
            if layer is None or s.scale == 0.0 or s.gate is False:
                continue
            delta = layer.delta(x, base, module) * s.scale
            if s.gate is not None:
                if s.gate.shape[0] != delta.shape[0]:
                    raise AdapterError(f"adapter {key!r}: the batch mixes noise levels inside and outside its "
                                       f"t_interval {s.spec.t_interval} and layer {name} sees a batch of "
                                       f"{delta.shape[0]} rows, not {s.gate.shape[0]}")
                delta = delta * s.gate.to(delta.device, delta.dtype).view(-1, *([1] * (delta.ndim - 1)))
            out = out + delta.to(out.dtype)
        return out


def stack_of(dit: nn.Module) -> AdapterStack | None:
    """The :class:`AdapterStack` of ``dit`` (None if it has no adapters)."""
    stack = getattr(dit, STACK_ATTR, None)
    return stack if isinstance(stack, AdapterStack) else None


def target_layers(dit: nn.Module, spec: AdapterSpec) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules of ``dit`` named by ``spec.targets`` (each pattern must match one)."""
    linears = {n: m for n, m in dit.named_modules() if isinstance(m, nn.Linear) and not n.startswith(ADAPTER_PREFIX)}
    found: dict[str, nn.Linear] = {}
    for target, pattern in zip(spec.targets, spec.patterns()):
        hits = {n: m for n, m in linears.items() if re.fullmatch(pattern, n)}
        if not hits:
            raise AdapterError(f"adapter target {target!r} matches no linear layer of the DiT "
                               f"(e.g. {', '.join(list(linears)[:3])})")
        found.update(hits)
    return dict(sorted(found.items(), key=lambda kv: list(linears).index(kv[0])))


def attach_adapter(dit: nn.Module, spec: AdapterSpec, name: str = "adapter",
                   layers: list[str] | None = None) -> AdapterSet:
    """Add adapter ``name`` to ``dit`` (hooks installed on first use); returns its :class:`AdapterSet`.

    Args:
        dit: a :class:`musicdiff.models.dit.DiffusionTransformer` (any module whose forward is
            ``(x, t, ...)``).
        spec: kind, rank, targets ... (``kind`` must not be ``none``).
        name: key of the adapter in ``dit.adapters.sets``.
        layers: explicit target module names (loading a file); default: ``spec.targets`` matched.
    """
    if not spec.active:
        raise AdapterError("adapter kind 'none' cannot be attached")
    stack = stack_of(dit)
    if stack is None:
        stack = AdapterStack()
        setattr(dit, STACK_ATTR, stack)
        dit.register_forward_pre_hook(_TimeHook(stack), with_kwargs=True)
    if name in stack.sets or hasattr(stack.sets, name) or not name or "." in name:
        raise AdapterError(f"cannot add an adapter named {name!r} (taken, or not a module name)")
    modules = dict(dit.named_modules())
    if layers is None:
        targets = target_layers(dit, spec)
    else:
        bad = [n for n in layers if not isinstance(modules.get(n), nn.Linear)]
        if bad:
            raise AdapterError(f"adapter {name!r} targets layers this DiT has no linear layer for: {bad[:5]}")
        targets = {n: modules[n] for n in layers}
    stack.sets[name] = AdapterSet(spec, targets).train(dit.training)  # dropout follows the DiT's mode
    for n, m in targets.items():
        if n not in stack.hooked:
            m.register_forward_hook(_LinearHook(stack, n))
            stack.hooked.add(n)
    return stack.sets[name]


def adapter_parameters(dit: nn.Module, name: str | None = None) -> list[nn.Parameter]:
    """Trainable parameters of adapter ``name`` (all adapters when None)."""
    stack = stack_of(dit)
    if stack is None:
        return []
    sets = stack.sets.values() if name is None else [stack.sets[name]]
    return [p for s in sets for p in s.parameters()]


def freeze_base(dit: nn.Module) -> None:
    """``requires_grad=False`` on every DiT parameter outside the adapters (which stay trainable)."""
    for n, p in dit.named_parameters():
        p.requires_grad_(n.startswith(ADAPTER_PREFIX))


def is_adapter_key(key: str) -> bool:
    """Whether a DiT ``state_dict`` key belongs to an adapter (not to the base model)."""
    return key.startswith(ADAPTER_PREFIX)


def base_state_dict(dit: nn.Module) -> dict[str, torch.Tensor]:
    """The DiT's ``state_dict`` without adapter entries."""
    return {k: v for k, v in dit.state_dict().items() if not is_adapter_key(k)}


def base_weights_hash(dit: nn.Module) -> str:
    """SHA-256 (hex) of the base DiT weights: names, shapes and float32 values, adapters excluded.

    Values are hashed as float32 so a base held in bf16/fp16 for inference hashes like its float32
    original when the cast is exact (it is for weights stored in those dtypes).
    """
    h = hashlib.sha256()
    for key, value in sorted(base_state_dict(dit).items()):
        v = value.detach()
        h.update(f"{key}:{tuple(v.shape)}:".encode())
        h.update((v.float() if v.is_floating_point() else v).cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def set_scale(dit: nn.Module, scale: float, name: str | None = None) -> None:
    """Set the scale of adapter ``name`` (all adapters when None)."""
    stack = stack_of(dit)
    for key, s in (stack.sets.items() if stack is not None else ()):
        if name is None or key == name:
            s.scale = float(scale)


class scaled:  # noqa: N801 - used as a context manager
    """``with scaled(dit, 0.0): ...`` runs with every adapter (or ``name``) at ``scale``, then restores."""

    def __init__(self, dit: nn.Module, scale: float, name: str | None = None) -> None:
        self.dit, self.scale, self.name = dit, scale, name

    def __enter__(self) -> None:
        stack = stack_of(self.dit)
        self.saved = {k: s.scale for k, s in stack.sets.items()} if stack is not None else {}
        set_scale(self.dit, self.scale, self.name)

    def __exit__(self, *exc: Any) -> None:
        for k, v in self.saved.items():
            set_scale(self.dit, v, k)


def remove_adapters(dit: nn.Module) -> nn.Module:
    """Detach every adapter from ``dit`` in place (hooks and weights); returns ``dit``."""
    for m in dit.modules():
        for hooks in (m._forward_hooks, m._forward_pre_hooks):  # noqa: SLF001 - no public removal by type
            for key in [k for k, h in hooks.items() if isinstance(h, (_LinearHook, _TimeHook))]:
                del hooks[key]
                getattr(m, "_forward_pre_hooks_with_kwargs", {}).pop(key, None)
    if stack_of(dit) is not None:
        delattr(dit, STACK_ATTR)
    return dit


def iter_layers(dit: nn.Module) -> Iterator[tuple[str, str, nn.Linear, nn.Module]]:
    """``(adapter name, layer name, base linear, adapter module)`` over every attached adapter layer."""
    stack = stack_of(dit)
    modules = dict(dit.named_modules())
    for key, s in (stack.sets.items() if stack is not None else ()):
        for n in s.names:
            yield key, n, modules[n], s.layer(n)


@torch.no_grad()
def merge_adapters(dit: nn.Module) -> nn.Module:
    """A plain copy of ``dit`` with ``W ← W + Σ_i s_i·ΔW_i`` folded in and no adapters left.

    Raises:
        AdapterError: an adapter limited to a noise-level interval (it cannot be a fixed weight).
    """
    stack = stack_of(dit)
    if stack is not None:
        for key, s in stack.sets.items():
            if s.scale != 0.0 and not s.spec.always_on:
                raise AdapterError(f"adapter {key!r} acts only for t in {s.spec.t_interval}: it cannot be merged "
                                   "into fixed weights (load it with adapters=[...] instead)")
    deltas: dict[str, torch.Tensor] = {}
    for key, n, linear, layer in iter_layers(dit):
        scale = stack.sets[key].scale
        if scale != 0.0:
            d = layer.delta_weight(linear.weight) * scale
            deltas[n] = deltas[n] + d if n in deltas else d
    merged = remove_adapters(copy.deepcopy(dit))
    modules = dict(merged.named_modules())
    for n, d in deltas.items():
        w = modules[n].weight
        w.copy_((w.float() + d.to(w.device)).to(w.dtype))
    return merged
