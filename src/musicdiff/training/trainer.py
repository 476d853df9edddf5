"""The training loop: Accelerate set-up, NaN guard, logging, demos, checkpoints, resume, export.

A task (see docs/ARCHITECTURE.md) owns its modules, optimisers and losses; the Trainer owns
everything around it, so the same loop trains the autoencoder (two optimisers, GAN) and the DiT
(one optimiser, optionally DeepSpeed) from one CPU to many GPU nodes.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from musicdiff.data.collate import collate
from musicdiff.tracking.base import NullLogger, RunLogger
from musicdiff.training import checkpoint as ckpt
from musicdiff.training.accelerator import build_accelerator
from musicdiff.training.sampler import ResumableShardedSampler

log = logging.getLogger("musicdiff.trainer")


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses: training diverged."""


class StepContext:
    """What a task's ``training_step`` uses to update its parameters (``ctx.backward_step``)."""

    def __init__(self, trainer: "Trainer", optimizers: Mapping[str, tuple[torch.optim.Optimizer, Any]]):
        self.trainer = trainer
        self.optimizers = optimizers
        self.accelerator = trainer.accelerator
        self.micro_step = 0
        self.skipped: dict[str, int] = defaultdict(int)
        self.stepped: dict[str, bool] = {}

    @property
    def sync(self) -> bool:
        """True on the micro-step that ends a gradient-accumulation cycle."""
        return (self.micro_step + 1) % self.trainer.grad_accum == 0

    def _all_finite(self, loss: torch.Tensor) -> bool:
        finite = torch.isfinite(loss.detach()).all().float().reshape(1)
        if self.trainer.world_size > 1:
            finite = finite.to(self.accelerator.device)
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item() > 0)

    def backward_step(self, name: str, loss: torch.Tensor) -> bool:
        """Backward ``loss`` and, at the end of an accumulation cycle, clip and step optimiser ``name``.

        Returns:
            False if the loss was not finite on any rank: nothing is applied, the gradients of this
            optimiser are cleared and the skip is counted and logged.
        """
        opt, sched = self.optimizers[name]
        tr = self.trainer
        if not self._all_finite(loss):
            self.skipped[name] += 1
            log.warning("non-finite %s loss at step %d: step skipped", name, tr.step)
            opt.zero_grad(set_to_none=True)
            self.stepped[name] = False
            return False
        if tr.deepspeed:
            self.accelerator.backward(loss)
            opt.step()
            if sched is not None:
                sched.step()
            opt.zero_grad()
            self.stepped[name] = True
            return True
        scaled = loss / tr.grad_accum
        if tr.scaler is not None:
            tr.scaler.scale(scaled).backward()
        else:
            scaled.backward()
        if not self.sync:
            self.stepped[name] = False
            return True
        params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
        if tr.world_size > 1:
            _all_reduce_mean([p.grad for p in params], tr.world_size)
        if tr.scaler is not None:
            tr.scaler.unscale_(opt)
        if tr.grad_clip and params:
            norm = torch.nn.utils.clip_grad_norm_(params, tr.grad_clip)
            tr.step_metrics[f"grad_norm/{name}"] = float(norm)
        if tr.scaler is not None:
            tr.scaler.step(opt)
            tr.scaler.update()
        else:
            opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad(set_to_none=True)
        self.stepped[name] = True
        return True


def _all_reduce_mean(grads: list[torch.Tensor], world_size: int, bucket_numel: int = 2**24) -> None:
    """Average gradients across ranks in flat buckets (one collective per ~64 MB)."""
    bucket: list[torch.Tensor] = []
    size = 0
    for g in grads + [None]:  # type: ignore[list-item]
        if g is not None:
            bucket.append(g)
            size += g.numel()
        if bucket and (g is None or size >= bucket_numel):
            flat = torch.cat([b.reshape(-1) for b in bucket])
            dist.all_reduce(flat)
            flat /= world_size
            offset = 0
            for b in bucket:
                b.copy_(flat[offset: offset + b.numel()].view_as(b))
                offset += b.numel()
            bucket, size = [], 0


class Trainer:
    """Runs a task on a dataset.

    Args:
        max_steps: optimiser steps to train for (total, across resumes).
        batch_size: micro-batch per process.
        grad_accum: micro-batches per optimiser step.
        mixed_precision: ``no`` | ``bf16`` | ``fp16``.
        grad_clip: max global grad norm (0 disables).
        num_workers: DataLoader workers per process.
        log_every: steps between metric logs.
        demo_every: steps between demo generations (0: only at the end).
        checkpoint_every: steps between checkpoints (0: only at the end).
        keep_last: checkpoints kept by rotation (0 keeps all).
        resume: ``auto`` (latest complete checkpoint in the run dir), ``never``, or a checkpoint path.
        max_consecutive_skips: abort after this many non-finite steps in a row.
        cpu: force CPU even if a GPU is present.
        deepspeed: DeepSpeed settings (see ``conf/trainer/deepspeed_*.yaml``) or None.
        progress: show a progress bar.
        export_dir_name: sub-directory of the run dir that receives the inference export.
    """

    def __init__(self, max_steps: int = 1000, batch_size: int = 4, grad_accum: int = 1,
                 mixed_precision: str = "no", grad_clip: float = 1.0, num_workers: int = 0,
                 log_every: int = 10, demo_every: int = 0, checkpoint_every: int = 0, keep_last: int = 3,
                 resume: str = "auto", max_consecutive_skips: int = 20, cpu: bool = False,
                 deepspeed: dict | None = None, progress: bool = True, export_dir_name: str = "export") -> None:
        if mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"trainer.mixed_precision must be no|bf16|fp16, got {mixed_precision!r}")
        self.max_steps, self.batch_size, self.grad_accum = max_steps, batch_size, grad_accum
        self.mixed_precision, self.grad_clip, self.num_workers = mixed_precision, grad_clip, num_workers
        self.log_every, self.demo_every = log_every, demo_every
        self.checkpoint_every, self.keep_last, self.resume = checkpoint_every, keep_last, resume
        self.max_consecutive_skips, self.cpu, self.progress = max_consecutive_skips, cpu, progress
        self.deepspeed_cfg = dict(deepspeed) if deepspeed else None
        self.export_dir_name = export_dir_name
        self.step = 0
        self.step_metrics: dict[str, float] = {}
        self._stop_requested = False

    # ------------------------------------------------------------------ set-up
    def _request_stop(self, signum, frame) -> None:  # noqa: ARG002
        log.warning("signal %d: saving a checkpoint and stopping at the next step", signum)
        self._stop_requested = True

    def _setup(self, task: nn.Module) -> dict[str, tuple[torch.optim.Optimizer, Any]]:
        self.accelerator = build_accelerator(self.mixed_precision, self.grad_accum, self.cpu, self.deepspeed_cfg,
                                             self.batch_size, self.grad_clip)
        self.world_size = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.is_main = self.accelerator.is_main_process
        self.deepspeed = self.deepspeed_cfg is not None
        task.to(self.accelerator.device)
        optimizers = dict(task.configure_optimizers())
        self.scaler = None
        if self.deepspeed:
            if len(optimizers) != 1:
                raise ValueError("DeepSpeed trainers support single-optimiser tasks (the diffusion task); "
                                 f"this task has {sorted(optimizers)}")
            (name, (opt, sched)), = optimizers.items()
            engine, opt, sched = self.accelerator.prepare(task, opt, sched)
            self.engine = engine
            optimizers = {name: (opt, sched)}
        elif self.mixed_precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.accelerator.device.type)
        if self.world_size > 1 and not self.deepspeed:
            for p in task.parameters():  # identical start on every rank
                dist.broadcast(p.data, src=0)
        return optimizers

    def _loader(self, dataset: Dataset, sampler: ResumableShardedSampler) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                          collate_fn=collate, drop_last=True, persistent_workers=False,
                          pin_memory=self.accelerator.device.type == "cuda")

    def _state(self, optimizers, epoch: int, batch_in_epoch: int) -> dict[str, Any]:
        return {
            "step": self.step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "optimizers": {n: o.state_dict() for n, (o, _) in optimizers.items()},
            "schedulers": {n: s.state_dict() for n, (_, s) in optimizers.items() if s is not None},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": ckpt.rng_state(), "world_size": self.world_size,
        }

    def _save(self, task, optimizers, epoch, batch_in_epoch, run_dir: Path, config, config_hash) -> None:
        state = self._state(optimizers, epoch, batch_in_epoch)
        if self.is_main:
            ckpt.save_checkpoint(run_dir / "checkpoints", self.step, task.checkpoint_modules()
                                 if hasattr(task, "checkpoint_modules") else {"task": task},
                                 state, config, config_hash, self.keep_last)
        self.accelerator.wait_for_everyone()

    def _resume(self, task, optimizers, run_dir: Path) -> tuple[int, int]:
        if self.resume == "never":
            return 0, 0
        path = ckpt.latest_checkpoint(run_dir / "checkpoints") if self.resume == "auto" else Path(self.resume)
        if path is None:
            return 0, 0
        modules = task.checkpoint_modules() if hasattr(task, "checkpoint_modules") else {"task": task}
        state = ckpt.load_checkpoint(path, modules)
        for n, (o, s) in optimizers.items():
            o.load_state_dict(state["optimizers"][n])
            if s is not None and n in state.get("schedulers", {}):
                s.load_state_dict(state["schedulers"][n])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])
        log.info("resumed from %s at step %d", path, self.step)
        return int(state["epoch"]), int(state["batch_in_epoch"])

    # ------------------------------------------------------------------ loop
    def fit(self, task: nn.Module, dataset: Dataset, logger: RunLogger | None = None, run_dir: str | Path = ".",
            config: DictConfig | dict | None = None, config_hash: str | None = None, seed: int = 0) -> dict[str, float]:
        """Train ``task`` on ``dataset`` until ``max_steps``; returns the final averaged metrics."""
        run_dir = Path(run_dir)
        logger = logger or NullLogger()
        optimizers = self._setup(task)
        if not self.is_main:
            logger = NullLogger()
        epoch, batch_in_epoch = self._resume(task, optimizers, run_dir)
        sampler = ResumableShardedSampler(len(dataset), self.batch_size * self.grad_accum, self.rank,
                                          self.world_size, seed)
        skipped_data = getattr(dataset, "skipped", None)
        if skipped_data:
            logger.log_metrics({f"data/skipped_{k}": v for k, v in skipped_data.items()}, self.step)
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
        for s in previous:
            signal.signal(s, self._request_stop)
        ctx = StepContext(self, optimizers)
        window: dict[str, list[float]] = defaultdict(list)
        final: dict[str, float] = {}
        consecutive_skips, t0 = 0, time.time()
        bar = tqdm(total=self.max_steps, initial=self.step, disable=not (self.progress and self.is_main),
                   desc="train", dynamic_ncols=True)
        try:
            while self.step < self.max_steps and not self._stop_requested:
                sampler.set_position(epoch, batch_in_epoch)
                for batch in self._loader(dataset, sampler):
                    self.step_metrics = {}
                    task.train()
                    with self.accelerator.autocast():
                        metrics = task.training_step(_to_device(batch, self.accelerator.device), self.step, ctx)
                    boundary = ctx.sync
                    ctx.micro_step += 1
                    if not boundary:
                        continue
                    batch_in_epoch += 1
                    if ctx.stepped and not any(ctx.stepped.values()):
                        consecutive_skips += 1
                        if consecutive_skips >= self.max_consecutive_skips:
                            raise NonFiniteLossError(f"{consecutive_skips} consecutive non-finite steps at step "
                                                     f"{self.step}: lower the learning rate or check the data")
                    else:
                        consecutive_skips = 0
                    ctx.stepped = {}
                    self.step += 1
                    if hasattr(task, "on_step_end"):
                        task.on_step_end(self.step)
                    for k, v in {**metrics, **self.step_metrics}.items():
                        if v is not None and math.isfinite(float(v)):
                            window[k].append(float(v))
                    bar.update(1)
                    if self.step % self.log_every == 0 or self.step == self.max_steps:
                        final = {k: sum(v) / len(v) for k, v in window.items() if v}
                        final["lr"] = next(iter(optimizers.values()))[0].param_groups[0]["lr"]
                        final["steps_per_s"] = self.log_every / max(time.time() - t0, 1e-9)
                        final["skipped_nonfinite"] = float(sum(ctx.skipped.values()))
                        logger.log_metrics({f"train/{k}": v for k, v in final.items()}, self.step)
                        bar.set_postfix({k: f"{v:.4g}" for k, v in final.items() if k in ("loss", "lr")})
                        window.clear()
                        t0 = time.time()
                    if self.demo_every and self.step % self.demo_every == 0 and self.is_main:
                        self._demo(task, logger)
                    if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                        self._save(task, optimizers, epoch, batch_in_epoch, run_dir, config, config_hash)
                    if self.step >= self.max_steps or self._stop_requested:
                        break
                else:
                    epoch, batch_in_epoch = epoch + 1, 0
            if window:
                final.update({k: sum(v) / len(v) for k, v in window.items() if v})
            self._save(task, optimizers, epoch, batch_in_epoch, run_dir, config, config_hash)
            if self.is_main and not self._stop_requested:
                if not (self.demo_every and self.step % self.demo_every == 0):
                    self._demo(task, logger)
                if hasattr(task, "export"):
                    out = ckpt.export_modules(run_dir / self.export_dir_name, task.export(), config, config_hash)
                    log.info("exported inference weights to %s", out)
        finally:
            bar.close()
            for s, h in previous.items():
                signal.signal(s, h)
        final["step"] = float(self.step)
        final["skipped_nonfinite"] = float(sum(ctx.skipped.values()))
        return final

    def _demo(self, task: nn.Module, logger: RunLogger) -> None:
        if not hasattr(task, "demo"):
            return
        task.eval()
        with torch.no_grad():
            task.demo(self.step, logger)
        task.train()


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch
