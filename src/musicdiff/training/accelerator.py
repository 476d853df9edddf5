"""Build the Accelerate ``Accelerator`` (single process, DDP via torchrun/accelerate, or DeepSpeed).

The DeepSpeed JSON config is generated here from the Hydra ``trainer.deepspeed`` node, never kept
as a separate hand-written file. DeepSpeed only shards (ZeRO); the weights stay fp32 and mixed
precision is torch autocast, as in the other trainers: DeepSpeed's own bf16 mode would cast the
whole task (frozen autoencoder, EMA copy) to bf16, so fp32 inputs no longer fit the autoencoder
and EMA updates of ``(1 - 0.9999)·Δ`` vanish in bf16.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from typing import Any, ContextManager

import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs


def deepspeed_config(ds: dict[str, Any], micro_batch: int, grad_accum: int, grad_clip: float) -> dict[str, Any]:
    """DeepSpeed's config dict from ``trainer.deepspeed`` (``zero_stage``, offload flags, ...)."""
    stage = int(ds.get("zero_stage", 2))
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": bool(ds.get("overlap_comm", True)),
                            "contiguous_gradients": True}
    if ds.get("offload_optimizer"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # whole weights for checkpoints/export
        if ds.get("offload_param"):
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": grad_clip or 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": False},  # fp32 weights; bf16 compute through autocast (module docstring)
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,
        "zero_allow_untested_optimizer": True,
    }


def _single_process_env() -> None:
    """Rendezvous variables for a DeepSpeed run started without a launcher (one process).

    DeepSpeed would otherwise look for MPI; ``accelerate launch``/torchrun set these themselves.
    """
    if "LOCAL_RANK" in os.environ or "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": os.environ.get("MASTER_PORT", str(port))})


PRECISIONS = ("fp32", "bf16", "fp16")


def resolve_precision(precision: str, mixed_precision: str | None = None) -> str:
    """Accelerate's ``mixed_precision`` value (``no`` | ``bf16`` | ``fp16``) for ``trainer.precision``.

    ``trainer.precision`` is ``fp32`` | ``bf16`` | ``fp16``, the same words as ``generator.precision``
    (``no`` is read as ``fp32``). ``mixed_precision`` is its former name, still read with a warning.

    Raises:
        ValueError: an unknown value, naming it.
    """
    if mixed_precision is not None:
        warnings.warn("trainer.mixed_precision is deprecated, use trainer.precision", FutureWarning, stacklevel=3)
        precision = mixed_precision
    value = "fp32" if precision == "no" else precision
    if value not in PRECISIONS:
        raise ValueError(f"trainer.precision must be fp32|bf16|fp16, got {precision!r}")
    return "no" if value == "fp32" else value


def build_accelerator(mixed_precision: str, grad_accum: int, cpu: bool, ds: dict[str, Any] | None,
                      micro_batch: int, grad_clip: float) -> Accelerator:
    """An Accelerator for the requested precision and (optional) DeepSpeed ZeRO stage.

    Accelerate silently drops a DeepSpeed plugin when ``cpu=True`` (it falls back to its plain
    multi-CPU mode), so with DeepSpeed the CPU is reached through DeepSpeed's own CPU accelerator
    (chosen automatically, gloo collectives) on machines without a GPU.

    Raises:
        ValueError: DeepSpeed with ``cpu=True`` on a machine that has a GPU, or with fp16 (no loss
            scaling under autocast + DeepSpeed: use bf16).
    """
    plugin, handlers = None, []
    if ds is not None:
        if mixed_precision == "fp16":
            raise ValueError("DeepSpeed trainers support trainer.precision=bf16|fp32, not fp16")
        if cpu and torch.cuda.is_available():
            raise ValueError("trainer.cpu=true with a DeepSpeed trainer on a GPU machine: Accelerate would "
                             "drop DeepSpeed; set trainer.cpu=false (DeepSpeed runs on CPU-only machines "
                             "through its CPU accelerator)")
        cpu = False
        _single_process_env()
        if not torch.cuda.is_available() and int(os.environ.get("LOCAL_RANK", -1)) >= 0:
            handlers.append(InitProcessGroupKwargs(backend="gloo"))  # else Accelerate counts 1 process, DeepSpeed N
        plugin = DeepSpeedPlugin(hf_ds_config=deepspeed_config(ds, micro_batch, grad_accum, grad_clip))
    return Accelerator(mixed_precision="no" if ds is not None else mixed_precision, cpu=cpu,
                       deepspeed_plugin=plugin, kwargs_handlers=handlers,
                       gradient_accumulation_steps=1 if ds is None else grad_accum)


def autocast(accelerator: Accelerator, mixed_precision: str, deepspeed: bool) -> ContextManager:
    """The forward's mixed-precision context: Accelerate's, or torch autocast under DeepSpeed.

    fp16 on CPU is torch's own autocast: Accelerate turns fp16 off on CPU without a word (no autocast),
    which would train in fp32 while the trainer's GradScaler scales the loss.
    """
    if not deepspeed:
        if mixed_precision == "fp16" and accelerator.device.type == "cpu":
            return torch.autocast("cpu", dtype=torch.float16)
        return accelerator.autocast()
    if mixed_precision == "bf16":
        return torch.autocast(accelerator.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
