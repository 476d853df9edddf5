"""Parameter-efficient fine-tuning of the DiT: LoRA, DoRA and LoRA-XS adapters (issue 12 §3-4).

Adapters hook the DiT's linear layers (``musicdiff.adapters.stack``) instead of replacing them, so
base weights and checkpoint keys stay untouched; several adapters stack with scales and may be
limited to a noise-level interval. Written by hand rather than with PEFT because PEFT renames the
base weights (``…to_qkv.base_layer.weight``, breaking the stable-audio-tools key mapping and the
base-weight hash), has no per-sample noise-level gating (its DoRA path cannot be masked per
sample) and no LoRA-XS.

    from musicdiff.adapters import AdapterSpec, attach_adapter, freeze_base, save_adapter, load_adapters
    attach_adapter(dit, AdapterSpec("lora", rank=8, targets=["cross_attn", "ff"])); freeze_base(dit)
    ... train ...; save_adapter("a.safetensors", dit)
    load_adapters(base_dit, ["a.safetensors:0.8"]); merged = merge_adapters(base_dit)
"""

from musicdiff.adapters.diagnostics import ab_distances, relative_weight_change
from musicdiff.adapters.ema import AdapterEMA, EMAAdaptedDiT
from musicdiff.adapters.io import (
    AdapterBaseMismatchError,
    adapter_tensors,
    load_adapters,
    read_adapter,
    save_adapter,
)
from musicdiff.adapters.spec import KINDS, TARGET_PRESETS, AdapterError, AdapterSpec, parse_adapter_specs
from musicdiff.adapters.stack import (
    AdapterStack,
    adapter_parameters,
    attach_adapter,
    base_state_dict,
    base_weights_hash,
    freeze_base,
    is_adapter_key,
    merge_adapters,
    remove_adapters,
    scaled,
    set_scale,
    stack_of,
)

__all__ = [
    "KINDS", "TARGET_PRESETS", "AdapterBaseMismatchError", "AdapterEMA", "AdapterError", "AdapterSpec",
    "AdapterStack", "EMAAdaptedDiT", "ab_distances", "adapter_parameters", "adapter_tensors", "attach_adapter",
    "base_state_dict", "base_weights_hash", "freeze_base", "is_adapter_key", "load_adapters", "merge_adapters",
    "parse_adapter_specs", "read_adapter", "relative_weight_change", "remove_adapters", "save_adapter", "scaled",
    "set_scale", "stack_of",
]
