"""The training loop: Accelerate set-up, NaN guard, logging, demos, checkpoints, resume, export.

A task (:class:`musicdiff.training.tasks.base.Task`: ``configure_optimizers`` and ``training_step``,
optional hooks with defaults) owns its modules, optimisers and losses; the Trainer owns
everything around it, so the same loop trains the autoencoder (two optimisers, GAN) and the DiT
(one optimiser, optionally DeepSpeed) from one CPU to many GPU nodes.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from musicdiff.data.base import begin_epoch, training_loader
from musicdiff.data.collate import collate
from musicdiff.files.checksums import describe_problems
from musicdiff.tracking.base import NullLogger, RunLogger
from musicdiff.training import checkpoint as ckpt
from musicdiff.training import distributed as mp
from musicdiff.training.accelerator import autocast, build_accelerator, resolve_precision
from musicdiff.training.data_order import ResumableShardedSampler
from musicdiff.training.step_context import StepContext
from musicdiff.training.tasks.base import Task, check_task

log = logging.getLogger("musicdiff.trainer")

# Checkpoint and stop on: SLURM preemption/scancel (TERM), sbatch --signal / torchrun forwarding
# (USR1, slurm/common.sh), submitit's time-limit warning (USR2).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses: training diverged."""


class Trainer:
    """Runs a task on a dataset.

    Args:
        max_steps: optimiser steps to train for (total, across resumes).
        batch_size: micro-batch per process.
        grad_accum: micro-batches per optimiser step.
        precision: ``fp32`` | ``bf16`` | ``fp16`` autocast of the forward (``no`` = ``fp32``), as
            ``generator.precision``.
        grad_clip: max global grad norm (0 disables).
        num_workers: DataLoader workers per process.
        log_every: steps between metric logs.
        demo_every: steps between demo generations (0: only at the end).
        checkpoint_every: steps between checkpoints (0: only at the end).
        keep_last: checkpoints kept by rotation (0 keeps all; the newest one that verifies is never deleted).
        resume: ``auto`` (newest checkpoint in the run dir whose checksums verify; damaged newer ones are
            skipped with a warning), ``never``, or a checkpoint path (must verify).
        max_consecutive_skips: abort after this many non-finite steps in a row.
        cpu: force CPU even if a GPU is present.
        deepspeed: DeepSpeed settings (see ``conf/trainer/deepspeed_*.yaml``) or None.
        progress: show a progress bar.
        export_dir_name: sub-directory of the run dir that receives the inference export.
        step_seeding: seed torch before every micro-batch from (seed, step, micro-batch slot)
            (:mod:`musicdiff.training.distributed`): the noise no longer depends on the number of
            processes, and a resumed run draws exactly what the uninterrupted run would have.
        metrics_file: JSON-lines file in the run dir receiving every metric log (None: off).
        mixed_precision: deprecated name of ``precision`` (Accelerate's ``no`` | ``bf16`` | ``fp16``).
    """

    def __init__(self, max_steps: int = 1000, batch_size: int = 4, grad_accum: int = 1,
                 precision: str = "fp32", grad_clip: float = 1.0, num_workers: int = 0,
                 log_every: int = 10, demo_every: int = 0, checkpoint_every: int = 0, keep_last: int = 3,
                 resume: str = "auto", max_consecutive_skips: int = 20, cpu: bool = False,
                 deepspeed: dict | None = None, progress: bool = True, export_dir_name: str = "export",
                 step_seeding: bool = True, metrics_file: str | None = "metrics.jsonl",
                 mixed_precision: str | None = None) -> None:
        mixed_precision = resolve_precision(precision, mixed_precision)  # Accelerate's name of the value
        max_steps, batch_size, grad_accum = (_whole("max_steps", max_steps, 1), _whole("batch_size", batch_size, 1),
                                             _whole("grad_accum", grad_accum, 1))
        num_workers, log_every = _whole("num_workers", num_workers, 0), _whole("log_every", log_every, 1)
        demo_every = _whole("demo_every", demo_every, 0)
        checkpoint_every = _whole("checkpoint_every", checkpoint_every, 0)
        keep_last = _whole("keep_last", keep_last, 0)
        max_consecutive_skips = _whole("max_consecutive_skips", max_consecutive_skips, 1)
        if isinstance(grad_clip, bool) or not isinstance(grad_clip, (int, float)) or not 0 <= grad_clip < math.inf:
            raise ValueError(f"trainer.grad_clip must be a finite number >= 0 (0 disables clipping), got {grad_clip!r}")
        if not isinstance(resume, str) or not resume:
            raise ValueError(f"trainer.resume must be auto, never or a checkpoint directory, got {resume!r}")
        self.max_steps, self.batch_size, self.grad_accum = max_steps, batch_size, grad_accum
        self.mixed_precision, self.grad_clip, self.num_workers = mixed_precision, grad_clip, num_workers
        self.log_every, self.demo_every = log_every, demo_every
        self.checkpoint_every, self.keep_last, self.resume = checkpoint_every, keep_last, resume
        self.max_consecutive_skips, self.cpu, self.progress = max_consecutive_skips, cpu, progress
        self.deepspeed_cfg = dict(deepspeed) if deepspeed else None
        self.export_dir_name, self.step_seeding, self.metrics_file = export_dir_name, step_seeding, metrics_file
        self.step = 0
        self._stop_requested = False  # set by a signal on this rank
        self._stop = False  # agreed by all ranks at a step boundary
        self._signal: int | None = None
        self._saved_step = -1

    # ------------------------------------------------------------------ set-up
    def _request_stop(self, signum, frame) -> None:  # noqa: ARG002
        log.warning("signal %d: saving a checkpoint and stopping at the next step", signum)
        self._stop_requested, self._signal = True, signum

    def _setup(self, task: Task) -> dict[str, tuple[torch.optim.Optimizer, Any]]:
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
            # The lr schedule stays outside the engine (stepped once per optimiser step by StepContext);
            # it follows the optimiser DeepSpeed really steps (a DeepSpeedCPUAdam with offload).
            self.engine, opt = self.accelerator.prepare(task, opt)
            inner = getattr(opt, "optimizer", opt)
            if sched is not None:
                sched.optimizer = getattr(inner, "optimizer", inner)
            self.zero_stage = mp.zero_stage(self.engine)
            optimizers = {name: (opt, sched)}
        elif self.mixed_precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.accelerator.device.type)
        if self.world_size > 1 and not self.deepspeed:
            for p in task.parameters():  # identical start on every rank
                dist.broadcast(p.data, src=0)
        return optimizers

    def _loader(self, dataset: Dataset, sampler: ResumableShardedSampler) -> DataLoader:
        # The dataset protocol (data/base.py): map-style by default, streaming datasets build their own.
        return training_loader(dataset, sampler, batch_size=self.batch_size, num_workers=self.num_workers,
                               collate_fn=collate, pin_memory=self.accelerator.device.type == "cuda")

    def _state(self, optimizers, epoch: int, batch_in_epoch: int) -> dict[str, Any]:
        return {
            "step": self.step, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            # DeepSpeed optimisers are sharded and saved by the engine (checkpoint's deepspeed/)
            "optimizers": {} if self.deepspeed else {n: o.state_dict() for n, (o, _) in optimizers.items()},
            "schedulers": {n: s.state_dict() for n, (_, s) in optimizers.items() if s is not None},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": ckpt.rng_state(), "world_size": self.world_size,
            "global_batch": self.global_batch,
        }

    @property
    def global_batch(self) -> int:
        """Items per optimiser step over all processes."""
        return self.batch_size * self.grad_accum * self.world_size

    def _save(self, task, optimizers, epoch, batch_in_epoch, run_dir: Path, config, config_hash) -> None:
        """Checkpoint on all ranks: staging dir, DeepSpeed shards (every rank), then the main rank's files."""
        if self.step == self._saved_step:
            return
        root = run_dir / "checkpoints"
        state = self._state(optimizers, epoch, batch_in_epoch)
        staging = ckpt.staging_dir(root, self.step)
        if self.is_main:
            ckpt.begin_checkpoint(root, self.step)
        self.accelerator.wait_for_everyone()
        modules: dict[str, Any] = task.checkpoint_modules()
        if self.deepspeed:
            try:
                mp.save_engine(self.engine, staging)
            except Exception as e:  # disk full while DeepSpeed writes its shards
                if self.is_main:
                    shutil.rmtree(staging, ignore_errors=True)
                raise ckpt.CheckpointError(f"could not write the DeepSpeed state of checkpoint step {self.step} into "
                                           f"{staging}: {' '.join(str(e).split())[:200]}; the previous checkpoints "
                                           f"are intact") from e
            if self.zero_stage == 3:
                modules = mp.full_state(self.engine, task, modules)
            self.accelerator.wait_for_everyone()
        if self.is_main:
            # raises NonFiniteWeightsError (nothing written, older checkpoints kept) or CheckpointError (disk full)
            ckpt.save_checkpoint(root, self.step, modules, state, config, config_hash, self.keep_last, staging=staging)
        self.accelerator.wait_for_everyone()
        self._saved_step = self.step

    def _resume(self, task, optimizers, run_dir: Path) -> tuple[int, int]:
        """Resume from the newest checkpoint that verifies (``auto``) or from ``resume``; returns the data position.

        ``auto`` skips damaged checkpoints (checksum mismatch, truncated or unreadable file) with
        a WARNING naming the file and falls back to the newest one that verifies; an explicit
        path that fails verification is an error.
        """
        if self.resume == "never":
            return 0, 0
        root = run_dir / "checkpoints"
        if self.resume != "auto":
            path = Path(self.resume)
            if self.is_main and (problems := ckpt.verify_checkpoint(path)):
                raise ckpt.CheckpointError(f"trainer.resume={path}: {describe_problems(problems)}")
            return self._load(task, optimizers, path)
        skip: set[Path] = set()
        while True:
            path = None
            if self.is_main:  # hashing on one rank; the others take its choice
                ckpt.clean_staging(root)
                path = ckpt.latest_verified_checkpoint(root, skip)
            path = mp.from_rank0(path, self.world_size)
            if path is None:
                return 0, 0
            try:
                return self._load(task, optimizers, path)
            except ckpt.CorruptCheckpointError as e:  # verified by size only (older checkpoint) yet unreadable
                if self.world_size > 1 or self.deepspeed:
                    raise
                log.warning("%s: skipping this checkpoint", e)
                skip.add(path)

    def _load(self, task, optimizers, path: Path) -> tuple[int, int]:
        modules = task.checkpoint_modules()
        if self.deepspeed:
            mp.load_engine(self.engine, path)  # the whole model + every rank's ZeRO shard
            state = ckpt.load_checkpoint(path, None if self.zero_stage == 3 else modules)
        else:
            state = ckpt.load_checkpoint(path, modules)
            for n, (o, _) in optimizers.items():
                o.load_state_dict(state["optimizers"][n])
        for n, (_, s) in optimizers.items():
            if s is not None and n in state.get("schedulers", {}):
                s.load_state_dict(state["schedulers"][n])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.step = self._saved_step = int(state["step"])
        if state.get("global_batch", self.global_batch) != self.global_batch:
            log.warning("global batch changed from %s to %d: the data position (epoch %s, batch %s) is kept "
                        "in global batches, so some items are repeated or skipped this epoch",
                        state["global_batch"], self.global_batch, state["epoch"], state["batch_in_epoch"])
        log.info("resumed from %s at step %d", path, self.step)
        return int(state["epoch"]), int(state["batch_in_epoch"])

    # ------------------------------------------------------------------ loop
    def fit(self, task: Task, dataset: Dataset, logger: RunLogger | None = None, run_dir: str | Path = ".",
            config: DictConfig | dict | None = None, config_hash: str | None = None, seed: int = 0) -> dict[str, float]:
        """Train ``task`` on ``dataset`` until ``max_steps``; returns the final averaged metrics.

        ``final["stopped"]`` is 1 when a SIGTERM/SIGUSR1/SIGUSR2 stopped the run early (after a
        checkpoint); a Python handler installed for that signal before (submitit's requeue on USR2)
        is then called.

        Raises:
            TypeError: ``task`` is not a :class:`~musicdiff.training.tasks.base.Task` (one line naming
                the methods it lacks).
        """
        check_task(task)
        logger = logger or NullLogger()
        optimizers = self._setup(task)
        rank0_dir = Path(mp.from_rank0(str(run_dir), self.world_size))
        if rank0_dir != Path(run_dir):
            log.warning("rank %d: run dir %s differs from rank 0's %s (pass hydra.run.dir=... to multi-process "
                        "runs); using rank 0's", self.rank, run_dir, rank0_dir)
        run_dir = rank0_dir
        if not self.is_main:
            logger = NullLogger()
        epoch, batch_in_epoch = self._resume(task, optimizers, run_dir)
        sampler = ResumableShardedSampler(len(dataset), self.batch_size * self.grad_accum, self.rank,
                                          self.world_size, seed)
        skipped_data = getattr(dataset, "skipped", None)
        if skipped_data:
            logger.log_metrics({f"data/skipped_{k}": v for k, v in skipped_data.items()}, self.step)
        previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        for s in previous:
            signal.signal(s, self._request_stop)
        ctx = StepContext(optimizers, grad_accum=self.grad_accum, world_size=self.world_size,
                          device=self.accelerator.device, grad_clip=self.grad_clip, scaler=self.scaler,
                          engine=self.engine if self.deepspeed else None)
        window: dict[str, list[float]] = defaultdict(list)
        micro: dict[str, list[float]] = defaultdict(list)
        final: dict[str, float] = {}
        consecutive_skips, t0 = 0, time.time()
        bar = tqdm(total=self.max_steps, initial=self.step, disable=not (self.progress and self.is_main),
                   desc="train", dynamic_ncols=True)
        try:
            while self.step < self.max_steps and not self._stop:
                sampler.set_position(epoch, batch_in_epoch)
                begin_epoch(dataset, epoch)
                for batch in self._loader(dataset, sampler):
                    ctx.step, ctx.metrics = self.step, {}
                    task.train()
                    if self.step_seeding:
                        slot = self.rank * self.grad_accum + ctx.micro_step % self.grad_accum
                        torch.manual_seed(mp.micro_batch_seed(seed, self.step, slot))
                    with autocast(self.accelerator, self.mixed_precision, self.deepspeed):
                        metrics = task.training_step(_to_device(batch, self.accelerator.device), self.step, ctx)
                    for k, v in metrics.items():
                        if v is not None:
                            micro[k].append(float(v))
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
                    task.on_step_end(self.step)
                    values = {**{k: sum(v) / len(v) for k, v in micro.items()}, **ctx.metrics}
                    micro.clear()
                    values, self._stop = mp.rank_mean(values, self._stop_requested, self.world_size,
                                                      self.accelerator.device)
                    for k, v in values.items():
                        if math.isfinite(v):
                            window[k].append(v)
                    bar.update(1)
                    if self.step % self.log_every == 0 or self.step == self.max_steps:
                        final = {k: sum(v) / len(v) for k, v in window.items() if v}
                        final["lr"] = next(iter(optimizers.values()))[0].param_groups[0]["lr"]
                        final["steps_per_s"] = self.log_every / max(time.time() - t0, 1e-9)
                        final["skipped_nonfinite"] = float(sum(ctx.skipped.values()))
                        logger.log_metrics({f"train/{k}": v for k, v in final.items()}, self.step)
                        self._write_metrics(run_dir, final)
                        bar.set_postfix({k: f"{v:.4g}" for k, v in final.items() if k in ("loss", "lr")})
                        window.clear()
                        t0 = time.time()
                    if self.demo_every and self.step % self.demo_every == 0:
                        self._demo(task, logger)
                    if self.checkpoint_every and self.step % self.checkpoint_every == 0:
                        self._save(task, optimizers, epoch, batch_in_epoch, run_dir, config, config_hash)
                    if self.step >= self.max_steps or self._stop:
                        break
                else:
                    epoch, batch_in_epoch = epoch + 1, 0
            if window:
                final.update({k: sum(v) / len(v) for k, v in window.items() if v})
            self._save(task, optimizers, epoch, batch_in_epoch, run_dir, config, config_hash)
            if not self._stop:
                self._finish(task, logger, run_dir, config, config_hash)
        finally:
            bar.close()
            for s, h in previous.items():
                signal.signal(s, h)
        final["step"] = float(self.step)
        final["skipped_nonfinite"] = float(sum(ctx.skipped.values()))
        final["stopped"] = float(self._stop)
        if self._stop:
            log.warning("stopped at step %d by a signal; resume with trainer.resume=auto", self.step)
            handler = previous.get(self._signal) if self._signal is not None else None
            if callable(handler):
                handler(self._signal, None)
        return final

    def _finish(self, task: Task, logger: RunLogger, run_dir: Path, config, config_hash) -> None:
        """Final demo and the inference export (ZeRO-3 weights are gathered on every rank first)."""
        if not (self.demo_every and self.step % self.demo_every == 0):
            self._demo(task, logger)
        from musicdiff.pretrained import write_export

        modules: dict[str, Any] = task.export()
        if modules and self.deepspeed and self.zero_stage == 3:
            modules = mp.full_state(self.engine, task, modules)
        if self.is_main and modules:
            out = write_export(run_dir / self.export_dir_name, modules, config, config_hash)
            log.info("exported inference weights to %s", out)
        if self.is_main:  # e.g. an adapter-only export
            for path in task.export_files(run_dir / self.export_dir_name):
                log.info("exported %s", path)
        self.accelerator.wait_for_everyone()

    def _write_metrics(self, run_dir: Path, metrics: Mapping[str, float]) -> None:
        if self.is_main and self.metrics_file:
            run_dir.mkdir(parents=True, exist_ok=True)
            with open(run_dir / self.metrics_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": self.step, **metrics}) + "\n")

    def _demo(self, task: Task, logger: RunLogger) -> None:
        """Demo on the main rank (on every rank under ZeRO-3, whose forward gathers weights collectively)."""
        if not (self.is_main or (self.deepspeed and self.zero_stage == 3)):
            return
        task.eval()
        with torch.no_grad():
            task.demo(self.step, logger)
        task.train()


def _whole(name: str, value: Any, minimum: int) -> int:
    """``trainer.<name>`` as an int >= ``minimum``, or one clear error line (before any model is trained)."""
    number = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not number or value < minimum:
        raise ValueError(f"trainer.{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch
