"""The task protocol: what :class:`musicdiff.training.trainer.Trainer` calls on a task.

A task owns its modules, optimisers and losses; the Trainer owns everything around them
(devices, precision, accumulation, the NaN guard, logging, demos, checkpoints, resume, export).
Every task subclasses :class:`Task` and implements the two required methods; the optional hooks
have defaults, so a task overrides only what it needs:

====================================  =========================================================
called by the Trainer                 when
====================================  =========================================================
``configure_optimizers()``  required  once at set-up, after ``task.to(device)``
``training_step(batch, step, ctx)``   every micro-batch (in train mode, under autocast);
required                              updates parameters through ``ctx.backward_step``
``on_step_end(step)``                 after every optimiser step (EMA updates); ``step`` is
                                      the number of finished steps
``demo(step, logger)``                every ``trainer.demo_every`` steps and at the end, in
                                      eval mode under ``torch.no_grad``
``checkpoint_modules()``              at every checkpoint and resume: the modules saved
``export()`` / ``export_files(dir)``  once at the end: inference modules / extra files
====================================  =========================================================

The Trainer also uses ``nn.Module``'s own ``to``, ``train``/``eval`` and ``parameters`` (broadcast
from rank 0 at start). The three tasks are :class:`~musicdiff.training.tasks.autoencoder.AutoencoderTask`
(SA2 stage 1), :class:`~musicdiff.training.tasks.diffusion.DiffusionTask` (stage 2) and
:class:`~musicdiff.training.tasks.arc.ARCTask` (adversarial post-training).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:  # annotations only
    from musicdiff.training.step_context import StepContext

__all__ = ["REQUIRED", "Task", "check_task"]

REQUIRED = ("configure_optimizers", "training_step")


class Task(nn.Module, abc.ABC):
    """Base class of training tasks: two required methods, optional hooks with defaults.

    A subclass that leaves a required method out cannot be built (``TypeError: Can't instantiate
    abstract class ... with abstract method training_step``).

    Attributes:
        adopt_objective: optional ``f(diffusion_node) -> node`` read by ``musicdiff-train
            init_from=...`` (:func:`musicdiff.cli.train.pretrained_parts`) for tasks that continue
            their base model's objective (ARC); None: the run's own ``diffusion`` node is kept.
    """

    adopt_objective: ClassVar[Callable[[Any], Any] | None] = None

    @abc.abstractmethod
    def configure_optimizers(self) -> Mapping[str, tuple[torch.optim.Optimizer, Any]]:
        """The optimisers by name, each with its lr scheduler (stepped once per optimiser step) or None.

        Returns:
            ``{name: (optimizer, scheduler | None)}``; ``training_step`` steps them by these names.
            DeepSpeed trainers take exactly one.
        """

    @abc.abstractmethod
    def training_step(self, batch: Mapping[str, Any], step: int, ctx: StepContext) -> Mapping[str, float | None]:
        """Compute the losses of one micro-batch and hand each to ``ctx.backward_step(name, loss)``.

        Args:
            batch: the collated batch, on the training device.
            step: optimiser steps finished so far (the same for every micro-batch of one step).
            ctx: the :class:`~musicdiff.training.step_context.StepContext` (backward, NaN guard,
                accumulation, clipping, optimiser and lr-schedule steps).

        Returns:
            Metrics of this micro-batch (None values are not logged); averaged over the
            accumulation cycle and the ranks, then logged as ``train/<key>``.
        """

    def on_step_end(self, step: int) -> None:  # noqa: B027 - optional hook
        """After each optimiser step (``step``: steps finished), e.g. EMA updates. Default: nothing."""

    def demo(self, step: int, logger: Any) -> None:  # noqa: B027 - optional hook
        """Generate and log demo outputs (eval mode, no grad; main rank, every rank under ZeRO-3).
        Default: nothing."""

    def checkpoint_modules(self) -> dict[str, nn.Module]:
        """Modules whose weights a training checkpoint holds, by name. Default: ``{"task": self}``."""
        return {"task": self}

    def export(self) -> dict[str, nn.Module]:
        """Inference modules written to the run's export directory at the end. Default: none."""
        return {}

    def export_files(self, out_dir: str | Path) -> list[Path]:
        """Extra files written into the export directory (main rank), e.g. an adapter. Default: none."""
        return []


def check_task(task: Any) -> Task:
    """``task`` if it is a :class:`Task`, else one clear error line naming what it lacks.

    Raises:
        TypeError: ``task`` does not subclass :class:`Task` (the line names the required methods
            it lacks, if any).
    """
    if isinstance(task, Task):
        return task
    missing = [name for name in REQUIRED if not callable(getattr(task, name, None))]
    lacks = f"; it lacks {', '.join(missing)}" if missing else ""
    raise TypeError(f"task {type(task).__name__} is not a musicdiff.training.tasks.base.Task: subclass it and "
                    f"implement {' and '.join(REQUIRED)}{lacks}")
