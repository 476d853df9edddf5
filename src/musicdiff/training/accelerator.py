"""Build the Accelerate ``Accelerator`` (single process, DDP via torchrun/accelerate, or DeepSpeed).

The DeepSpeed JSON config is generated here from the Hydra ``trainer.deepspeed`` node, never kept
as a separate hand-written file.
"""

from __future__ import annotations

from typing import Any

from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin


def deepspeed_config(ds: dict[str, Any], micro_batch: int, grad_accum: int, grad_clip: float,
                     mixed_precision: str) -> dict[str, Any]:
    """DeepSpeed's config dict from ``trainer.deepspeed`` (``zero_stage``, offload flags, ...)."""
    stage = int(ds.get("zero_stage", 2))
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": bool(ds.get("overlap_comm", True)),
                            "contiguous_gradients": True}
    if ds.get("offload_optimizer"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        if ds.get("offload_param"):
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": grad_clip or 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": mixed_precision == "bf16"},
        "fp16": {"enabled": mixed_precision == "fp16"},
        "steps_per_print": 10**9,
        "zero_allow_untested_optimizer": True,
    }


def build_accelerator(mixed_precision: str, grad_accum: int, cpu: bool, ds: dict[str, Any] | None,
                      micro_batch: int, grad_clip: float) -> Accelerator:
    """An Accelerator for the requested precision and (optional) DeepSpeed ZeRO stage."""
    plugin = None
    if ds is not None:
        plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config(ds, micro_batch, grad_accum, grad_clip,
                                                               mixed_precision))
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu, deepspeed_plugin=plugin,
                       gradient_accumulation_steps=1 if ds is None else grad_accum)
