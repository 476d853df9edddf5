"""The task protocol (training/tasks/base.py) and StepContext built from explicit collaborators.

A task implementing only the two required methods trains, checkpoints and resumes through the
Trainer on the protocol's defaults; a task lacking one fails with one line naming it; StepContext
works without a Trainer (accumulation, clipping, NaN skips) and its module does not import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from musicdiff.training import checkpoint as ckpt
from musicdiff.training.step_context import StepContext
from musicdiff.training.tasks.arc import ARCTask
from musicdiff.training.tasks.autoencoder import AutoencoderTask
from musicdiff.training.tasks.base import Task, check_task
from musicdiff.training.tasks.diffusion import DiffusionTask
from musicdiff.training.trainer import Trainer
from tests.training.test_trainer import ToyData  # y = x @ w, learnt in a few dozen steps


class MinimalTask(Task):
    """Only the required methods: no demo, no EMA, no export, default checkpoint modules."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 1)

    def configure_optimizers(self):
        return {"main": (torch.optim.SGD(self.net.parameters(), lr=0.05), None)}

    def training_step(self, batch, step, ctx):
        y = torch.tensor([float(m["prompt"]) for m in batch["metadata"]])
        loss = ((self.net(batch["audio"]).squeeze(-1) - y) ** 2).mean()
        ctx.backward_step("main", loss)
        return {"loss": loss.item()}


def _trainer(**kw):
    args = dict(max_steps=40, batch_size=8, log_every=10, grad_clip=0.0, checkpoint_every=20, keep_last=0,
                progress=False, cpu=True)
    return Trainer(**{**args, **kw})


def test_the_three_tasks_implement_the_protocol():
    assert all(issubclass(t, Task) for t in (DiffusionTask, AutoencoderTask, ARCTask))
    assert ARCTask.adopt_objective is not None and Task.adopt_objective is None


def test_a_task_with_only_the_required_methods_trains_checkpoints_and_resumes(tmp_path):
    task = MinimalTask()
    metrics = _trainer().fit(task, ToyData(), run_dir=tmp_path)
    assert metrics["step"] == 40 and metrics["loss"] < 0.05  # it learnt y = x @ w
    newest = ckpt.list_checkpoints(tmp_path / "checkpoints")[-1]
    assert newest.name == "step_00000040"
    keys = set(load_file(newest / ckpt.WEIGHTS))
    assert keys == {"task.net.weight", "task.net.bias"}  # default checkpoint_modules: {"task": task}
    assert not (tmp_path / "export").exists()  # default export: nothing
    resumed = MinimalTask()
    trainer = _trainer()
    trainer.fit(resumed, ToyData(), run_dir=tmp_path)  # resumes at step 40: nothing left to train
    assert trainer.step == 40
    for a, b in zip(resumed.parameters(), task.parameters()):
        assert torch.equal(a, b)


def test_a_task_lacking_a_required_method_fails_with_one_line_naming_it(tmp_path):
    class NoStep(Task):
        def configure_optimizers(self):
            return {}

    with pytest.raises(TypeError, match="training_step") as err:
        NoStep()
    assert "\n" not in str(err.value)

    class DuckTyped(nn.Module):  # not a Task: the Trainer says what to implement before building anything
        def configure_optimizers(self):
            return {}

    with pytest.raises(TypeError, match=r"not a musicdiff\.training\.tasks\.base\.Task.*lacks training_step$") as err:
        _trainer().fit(DuckTyped(), ToyData(), run_dir=tmp_path)
    assert "\n" not in str(err.value) and not (tmp_path / "checkpoints").exists()
    assert check_task(MinimalTask()).__class__ is MinimalTask


def test_step_context_from_explicit_collaborators_accumulates_clips_and_skips():
    """grad_accum=2: the first micro-batch only accumulates, the second steps with the mean gradient
    (clipped to grad_clip, norm logged in ctx.metrics); a NaN loss is skipped, counted, gradients cleared."""
    torch.manual_seed(0)
    net = nn.Linear(3, 1, bias=False)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    ctx = StepContext({"main": (opt, None)}, grad_accum=2, world_size=1, device="cpu", grad_clip=0.1)
    x = torch.randn(2, 3)
    w0 = net.weight.detach().clone()
    grads = [torch.autograd.grad(net(x[i]).pow(2).sum(), net.weight)[0] for i in range(2)]
    mean = (grads[0] + grads[1]) / 2
    assert not ctx.sync and ctx.backward_step("main", net(x[0]).pow(2).sum())
    assert torch.equal(net.weight, w0) and ctx.stepped == {"main": False}
    ctx.micro_step += 1
    assert ctx.sync and ctx.backward_step("main", net(x[1]).pow(2).sum())
    norm = float(mean.norm())
    assert ctx.metrics["grad_norm/main"] == pytest.approx(norm, rel=1e-5) and norm > 0.1
    torch.testing.assert_close(net.weight, w0 - mean * 0.1 / (norm + 1e-6))
    assert ctx.stepped == {"main": True} and net.weight.grad is None
    ctx.micro_step, ctx.step, w1 = ctx.micro_step + 1, 7, net.weight.detach().clone()
    assert not ctx.backward_step("main", net(x[0]).sum() * float("nan"))
    assert ctx.skipped == {"main": 1} and torch.equal(net.weight, w1) and net.weight.grad is None


def test_step_context_and_the_protocol_do_not_import_the_trainer():
    """No import cycle: neither module imports the Trainer (not even for type checking)."""
    import musicdiff.training.step_context as step_context
    import musicdiff.training.tasks.base as base

    for module in (step_context, base):
        tree = ast.parse(Path(module.__file__).read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not {n for n in names if n.startswith("musicdiff.training.trainer")}, module.__name__
