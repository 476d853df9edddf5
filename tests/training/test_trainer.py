"""The Trainer on a toy regression task: learning, NaN guard, checkpoints, resume continuity."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from musicdiff.training import checkpoint as ckpt
from musicdiff.training.tasks.base import Task
from musicdiff.training.trainer import NonFiniteLossError, Trainer


class ToyData(Dataset):
    def __init__(self, n=64):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0])

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"audio": self.x[i], "padding_mask": torch.ones(1, dtype=torch.bool), "prompt": str(float(self.y[i])),
                "seconds_start": 0.0, "seconds_total": 1.0, "path": str(i)}


class ToyTask(Task):
    def __init__(self, nan_at=(), lr=0.05):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Linear(4, 1)
        self.nan_at, self.lr = set(nan_at), lr
        self.demos = 0

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.net.parameters(), lr=self.lr)
        return {"main": (opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))}

    def training_step(self, batch, step, ctx):
        y = torch.tensor([float(m["prompt"]) for m in batch["metadata"]])
        loss = ((self.net(batch["audio"]).squeeze(-1) - y) ** 2).mean()
        if step in self.nan_at:
            loss = loss * float("nan")
        ctx.backward_step("main", loss)
        return {"loss": loss.item()}

    def demo(self, step, logger):
        self.demos += 1

    def export(self):
        return {"net": self.net}


def _trainer(**kw):
    args = dict(max_steps=60, batch_size=8, log_every=10, grad_clip=0.0, checkpoint_every=20, keep_last=2, progress=False, cpu=True)
    args.update(kw)
    return Trainer(**args)


def test_trainer_learns_and_exports(tmp_path):
    task = ToyTask()
    metrics = _trainer().fit(task, ToyData(), run_dir=tmp_path)
    assert metrics["loss"] < 0.05
    assert metrics["step"] == 60
    assert (tmp_path / "export" / "net.safetensors").is_file()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step_00000040", "step_00000060"]
    assert task.demos == 1


def test_nan_guard_skips_and_counts(tmp_path):
    task = ToyTask(nan_at={3, 4})
    before = None
    metrics = _trainer(max_steps=10).fit(task, ToyData(), run_dir=tmp_path)
    assert metrics["skipped_nonfinite"] == 2
    assert all(torch.isfinite(p).all() for p in task.parameters())


def test_nan_guard_aborts_on_divergence(tmp_path):
    task = ToyTask(nan_at=set(range(100)))
    with pytest.raises(NonFiniteLossError, match="consecutive non-finite"):
        _trainer(max_consecutive_skips=5).fit(task, ToyData(), run_dir=tmp_path)


def test_resume_continues_identically(tmp_path):
    """Training 60 steps at once == 20 steps, stop, resume to 60 (same weights, same data order)."""
    full = ToyTask()
    _trainer(checkpoint_every=0).fit(full, ToyData(), run_dir=tmp_path / "a")
    part = ToyTask()
    _trainer(max_steps=20).fit(part, ToyData(), run_dir=tmp_path / "b")
    resumed = ToyTask()
    tr = _trainer()
    tr.fit(resumed, ToyData(), run_dir=tmp_path / "b")
    assert tr.step == 60
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_grad_accum_matches_bigger_batch(tmp_path):
    a, b = ToyTask(), ToyTask()
    _trainer(max_steps=5, batch_size=8, checkpoint_every=0).fit(a, ToyData(), run_dir=tmp_path / "a")
    _trainer(max_steps=5, batch_size=4, grad_accum=2, checkpoint_every=0).fit(b, ToyData(), run_dir=tmp_path / "b")
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-5)


def test_stop_signal_checkpoints_then_chains_the_previous_handler(tmp_path):
    """USR2 (submitit's time-limit warning) mid-run: checkpoint at that step, no export, then the
    handler installed before fit (submitit's requeue) runs, after the checkpoint exists."""
    import os
    import signal

    calls = []

    def previous(signum, frame):
        calls.append((signum, [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")]))

    class Signalling(ToyTask):
        def on_step_end(self, step):
            if step == 5:
                os.kill(os.getpid(), signal.SIGUSR2)

    old = signal.signal(signal.SIGUSR2, previous)
    try:
        metrics = _trainer(checkpoint_every=0).fit(Signalling(), ToyData(), run_dir=tmp_path)
    finally:
        signal.signal(signal.SIGUSR2, old)
    assert metrics["stopped"] == 1.0 and metrics["step"] == 5
    assert calls == [(signal.SIGUSR2, ["step_00000005"])]
    assert not (tmp_path / "export").exists()
    resumed = _trainer(checkpoint_every=0)
    assert resumed.fit(ToyTask(), ToyData(), run_dir=tmp_path)["stopped"] == 0.0 and resumed.step == 60


class ProbeTask(ToyTask):
    """ToyTask that records, per optimiser step: the loss and the same loss in fp32 (autocast off), the
    reference gradient (plain autograd, unscaled), the weight gradient the backward pass really produced
    (hook), the GradScaler's scale, the output dtype and the weights before and after the step."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.losses, self.losses32, self.true_grads, self.raw_grads, self.scales = [], [], [], [], []
        self.before, self.after, self._hooked, self.out_dtypes = [], [], [], set()
        self.net.weight.register_hook(lambda g: self._hooked.append(g.detach().clone()))

    def training_step(self, batch, step, ctx):
        y = torch.tensor([float(m["prompt"]) for m in batch["metadata"]])
        out = self.net(batch["audio"]).squeeze(-1)
        self.out_dtypes.add(out.dtype)
        loss = ((out.float() - y) ** 2).mean()
        with torch.autocast("cpu", enabled=False), torch.no_grad():
            self.losses32.append(float(((self.net(batch["audio"]).squeeze(-1) - y) ** 2).mean()))
        params = list(self.net.parameters())
        self.true_grads.append([g.detach().float() for g in torch.autograd.grad(loss, params, retain_graph=True)])
        self._hooked.clear()
        self.before.append([p.detach().clone() for p in params])
        self.scales.append(ctx.scaler.get_scale() if ctx.scaler is not None else None)
        ctx.backward_step("main", loss)
        self.raw_grads.append(self._hooked[-1])  # the weight gradient as the backward pass produced it
        self.after.append([p.detach().clone() for p in params])
        self.losses.append(loss.item())
        return {"loss": loss.item()}


def test_grad_clip_applies_the_clipped_gradient(tmp_path):
    """grad_clip=0.5 with gradients ~20x larger: every SGD update is -lr * g * clip/|g| (the update's
    global norm is exactly lr * clip), and the logged grad_norm is the pre-clip norm."""
    import json

    clip, lr = 0.5, 0.05
    task = ProbeTask(lr=lr)
    _trainer(max_steps=4, grad_clip=clip, log_every=1, checkpoint_every=0).fit(task, ToyData(), run_dir=tmp_path)
    logged = [json.loads(line)["grad_norm/main"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len(task.true_grads) == len(logged) == 4
    for g, before, after, norm in zip(task.true_grads, task.before, task.after, logged):
        total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in g]))
        assert total > 10 * clip  # clipping is active
        assert norm == pytest.approx(float(total), rel=1e-5)
        coef = clip / (float(total) + 1e-6)
        for gi, b, a in zip(g, before, after):
            torch.testing.assert_close(a, b - lr * coef * gi, rtol=1e-5, atol=1e-7)
        step = torch.linalg.vector_norm(torch.cat([(b - a).flatten() for b, a in zip(before, after)]))
        assert float(step) == pytest.approx(lr * clip, rel=1e-4)


def test_fp16_matches_fp32_and_the_grad_scaler_scales_then_unscales(tmp_path):
    """fp16 autocast (on CPU too) + GradScaler: each loss equals the fp32 loss of the same weights and
    batch to fp16 rounding; the backward pass sees gradients times the loss scale; a step whose scaled
    gradients overflow is skipped (weights unchanged) and halves the scale; every other step applies
    the unscaled gradient (plain SGD update)."""
    from accelerate.state import AcceleratorState

    lr = 0.05
    task = ProbeTask(lr=lr)
    AcceleratorState._reset_state(reset_partial_state=True)  # the process-wide state holds one precision
    try:
        tr = _trainer(max_steps=8, batch_size=16, checkpoint_every=0, precision="fp16")
        tr.fit(task, ToyData(), run_dir=tmp_path)
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    assert task.out_dtypes == {torch.float16}  # the forward really ran in fp16
    assert task.losses == pytest.approx(task.losses32, rel=2e-3)
    applied = skipped = 0
    for i, (raw, true, scale) in enumerate(zip(task.raw_grads, task.true_grads, task.scales)):
        before, after = task.before[i], task.after[i]
        next_scale = task.scales[i + 1] if i + 1 < len(task.scales) else tr.scaler.get_scale()
        if torch.isfinite(raw).all():
            applied += 1
            torch.testing.assert_close(raw / scale, true[0], rtol=1e-2, atol=1e-3)  # scaled backward
            torch.testing.assert_close(after[0], before[0] - lr * raw / scale, rtol=1e-5, atol=1e-6)  # unscaled
            assert next_scale == scale
        else:
            skipped += 1
            assert all(torch.equal(a, b) for a, b in zip(after, before))
            assert next_scale == scale / 2
    assert task.scales[0] == 2.0**16 and applied >= 3 and skipped >= 1, (applied, skipped, task.scales)
    assert task.losses32[-1] < 0.6 * task.losses32[0], (task.losses32, task.scales)  # and it trains
