"""Adapter fine-tuning inside the diffusion task: set-up, checkpoints, diagnostics, export.

:class:`AdapterTraining` is what :class:`musicdiff.training.tasks.diffusion.DiffusionTask` holds when
its ``adapter`` config is not ``none``: the adapter is attached to the (pretrained) DiT, every base
weight and the conditioners are frozen, the EMA averages the adapter alone (:class:`AdapterEMA`),
training checkpoints hold the adapter, its EMA and the base's weight hash (a resume onto another
base is refused), demos log :mod:`musicdiff.adapters.diagnostics`, and the export is the adapter
file ``adapter.safetensors`` recording the base hash.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from musicdiff.adapters.diagnostics import ab_distances, relative_weight_change
from musicdiff.adapters.ema import AdapterEMA
from musicdiff.adapters.io import AdapterBaseMismatchError, save_adapter
from musicdiff.adapters.spec import AdapterSpec
from musicdiff.adapters.stack import adapter_parameters, attach_adapter, base_weights_hash, freeze_base, scaled

log = logging.getLogger("musicdiff.adapters")

NAME = "adapter"
EXPORT_FILE = "adapter.safetensors"


def as_spec(adapter: Any) -> AdapterSpec | None:
    """An :class:`AdapterSpec` from a spec, a mapping (config node) or None; None for ``kind: none``."""
    if adapter is None:
        return None
    spec = adapter if isinstance(adapter, AdapterSpec) else AdapterSpec(**dict(adapter))
    return spec if spec.active else None


class BaseIdentity(nn.Module):
    """A checkpoint entry holding the base DiT's weight hash; loading it onto another base fails.

    The hash is computed on first use (after any ``init_from`` loading) and cached: the base is frozen.
    """

    def __init__(self, dit: nn.Module) -> None:
        super().__init__()
        self._dit = [dit]
        self._hex: str | None = None
        self.register_buffer("sha256", torch.zeros(32, dtype=torch.uint8))
        self.register_load_state_dict_post_hook(self._check)

    @property
    def hexdigest(self) -> str:
        """SHA-256 of the base weights (:func:`base_weights_hash`)."""
        if self._hex is None:
            self._hex = base_weights_hash(self._dit[0])
        return self._hex

    def refresh(self) -> "BaseIdentity":
        """Write the current hash into the buffer (before saving or as the reference when loading)."""
        self.sha256.copy_(torch.tensor(list(bytes.fromhex(self.hexdigest)), dtype=torch.uint8))
        return self

    def _check(self, module: nn.Module, incompatible: Any) -> None:  # noqa: ARG002
        saved = bytes(self.sha256.tolist()).hex()
        if saved != self.hexdigest:
            self.refresh()
            raise AdapterBaseMismatchError(f"the checkpoint's adapter was trained on a base DiT with weight hash "
                                           f"{saved}, but this run's base hashes to {self.hexdigest} "
                                           "(resume with the same init_from)")


class AdapterTraining:
    """Adapter fine-tuning state of a diffusion task.

    Args:
        dit: the base DiT (pretrained weights already loaded).
        spec: the adapter to train.
        conditioner: frozen as well (only adapter weights train).
        multi_avg_fn: the task's EMA update.
        ab_every: run the with/without-adapter A/B at demos whose step is a multiple of this (0: every demo).
    """

    def __init__(self, dit: nn.Module, spec: AdapterSpec, conditioner: nn.Module | None, multi_avg_fn: Callable,
                 ab_every: int = 0) -> None:
        if ab_every < 0:
            raise ValueError(f"adapter_ab_every must be >= 0, got {ab_every}")
        self.dit, self.spec, self.ab_every = dit, spec, int(ab_every)
        attach_adapter(dit, spec, NAME)
        freeze_base(dit)
        if conditioner is not None:
            conditioner.requires_grad_(False)
        self.ema = AdapterEMA(dit, NAME, multi_avg_fn)
        self.base = BaseIdentity(dit)
        n = sum(p.numel() for p in self.parameters())
        log.info("%s adapter (rank %d) on %d layers: %d trainable parameters, base frozen", spec.kind, spec.rank,
                 len(dit.adapters.sets[NAME].names), n)

    def parameters(self) -> list[nn.Parameter]:
        """The trainable adapter parameters."""
        return adapter_parameters(self.dit, NAME)

    def checkpoint_modules(self, conditioner: nn.Module) -> dict[str, nn.Module]:
        """Adapter, its EMA, the (frozen) conditioner and the base identity; not the frozen base."""
        self.base.to(self.ema.n_averaged.device)
        return {"adapter": self.dit.adapters.sets[NAME], "ema": self.ema, "conditioner": conditioner,
                "adapter_base": self.base.refresh()}

    @torch.no_grad()
    def log_diagnostics(self, task: Any, step: int, logger: Any, latents: torch.Tensor | None,
                        audio: torch.Tensor | None) -> dict[str, float]:
        """Per-layer ``‖ΔW‖/‖W‖`` of the EMA adapter and, every ``ab_every`` steps, the fixed-seed A/B.

        Args:
            task: the diffusion task (its ``generate`` gives the adapter-off generation).
            step: training step.
            logger: the run logger (``log_metrics``).
            latents: the demo generation with the adapter (task's demo prompts and seed); None skips the A/B.
            audio: its decoded audio ``[B, C, T]`` (or None).
        """
        ema_layers = {n: self.ema.averaged.module.layer(n) for n in self.dit.adapters.sets[NAME].names}
        rel = relative_weight_change(self.dit, NAME, weights=ema_layers)
        metrics = {f"adapter/dw_rel/{k}": v for k, v in rel.items()}
        if rel:
            metrics["adapter/dw_rel_mean"] = sum(rel.values()) / len(rel)
            metrics["adapter/dw_rel_max"] = max(rel.values())
        if latents is not None and (self.ab_every == 0 or step % self.ab_every == 0):
            with scaled(self.dit, 0.0):
                base = task.generate(task.demo_prompts, task.demo_seconds)
            base_audio = None
            if audio is not None and task.autoencoder is not None:
                base_audio = task.autoencoder.decode(base).float().clamp(-1, 1).cpu()
            ab = ab_distances(latents, base, audio, base_audio, getattr(task.autoencoder, "sample_rate", None))
            metrics.update({f"adapter/ab_{k}": v for k, v in ab.items()})
        logger.log_metrics(metrics, step)
        return metrics

    def export(self, out_dir: str | Path) -> list[Path]:
        """Write the EMA adapter to ``<out_dir>/adapter.safetensors`` (atomically, with the base hash)."""
        path = save_adapter(Path(out_dir) / EXPORT_FILE, self.dit, NAME, base_hash=self.base.hexdigest,
                            tensors=self.ema.averaged_tensors())
        log.info("exported the %s adapter to %s (base %s)", self.spec.kind, path, self.base.hexdigest[:12])
        return [path]

