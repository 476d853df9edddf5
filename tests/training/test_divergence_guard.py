"""Guards of the autoencoder task against divergence on real music (issue 14): lr warm-up, latent guard,
adversarial ramp, divergence warning + rollback, non-finite latents; the paper recipe keeps them off."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.training.tasks.autoencoder import AutoencoderTask
from musicdiff.training.tasks.divergence import DivergenceGuard

CONF = Path(__file__).resolve().parents[2] / "conf"


class Ctx:
    """StepContext stand-in: backward, step the optimiser and its scheduler; skip non-finite losses."""

    def __init__(self, optimizers):
        self.optimizers, self.skipped = optimizers, []

    def backward_step(self, name, loss):
        opt, sched = self.optimizers[name]
        if not torch.isfinite(loss.detach()).all():
            self.skipped.append(name)
            opt.zero_grad(set_to_none=True)
            return False
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad(set_to_none=True)
        return True


def tiny_task(**overrides) -> AutoencoderTask:
    ae = OmegaConf.load(CONF / "autoencoder" / "tiny.yaml")
    task = OmegaConf.load(CONF / "task" / "autoencoder.yaml")
    task.discriminator = None
    cfg = OmegaConf.create({"autoencoder": ae, "task": task})
    for k, v in overrides.items():
        OmegaConf.update(cfg, f"task.{k}", v, force_add=True)
    torch.manual_seed(0)
    return instantiate(cfg.task)


def batch(seed: int = 0, n: int = 2048) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"audio": 0.3 * torch.randn(2, 2, n, generator=g)}


def test_paper_recipe_has_every_guard_off() -> None:
    task = tiny_task()
    assert task.lr_warmup_steps == 0 and task.latent_limit is None and task.divergence is None
    assert task.adversarial_ramp_steps == 0
    opts = task.configure_optimizers()
    assert opts["generator"][1] is None and opts["generator"][0].param_groups[0]["lr"] == 1.5e-4


def test_tiny_recipe_turns_the_guards_on() -> None:
    exp = OmegaConf.load(CONF / "experiment" / "tiny_autoencoder.yaml")
    assert exp.task.lr_warmup_steps > 0 and exp.task.latent_limit is not None
    assert exp.task.divergence.action == "rollback"
    assert instantiate(exp.task.divergence).factor == exp.task.divergence.factor


def test_lr_warmup_is_linear_and_excludes_a_scheduler() -> None:
    task = tiny_task(lr_warmup_steps=4)
    opt, sched = task.configure_optimizers()["generator"]
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([1.5e-4 * f for f in (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)])
    with pytest.raises(ValueError, match="lr_warmup_steps and a task.scheduler_"):
        AutoencoderTask(task.autoencoder, task.optimizer_generator, lr_warmup_steps=3,
                        scheduler_generator=lambda o: None)


def test_latent_guard_penalises_only_channels_above_the_limit() -> None:
    task = tiny_task(latent_limit=2.0)
    mean = torch.zeros(1, 3, 100)
    mean[:, 0] = 1.0  # rms 1: fine
    mean[:, 1] = 3.0  # rms 3: 1 above
    mean[:, 2] = -4.0  # rms 4: 2 above
    mean.requires_grad_(True)
    penalty = task.latent_guard(mean)
    assert float(penalty.detach()) == pytest.approx(1.0 + 4.0, rel=1e-5)
    penalty.backward()
    assert mean.grad[:, 0].abs().max() == 0 and (mean.grad[:, 1] > 0).all() and (mean.grad[:, 2] < 0).all()


def test_adversarial_ramp() -> None:
    task = tiny_task()
    task.discriminator = torch.nn.Identity()  # only the schedule is under test
    task.adversarial_warmup_steps, task.adversarial_ramp_steps = 10, 4
    assert [task.adversarial_scale(s) for s in (0, 9, 10, 11, 13, 50)] == [0, 0, 0.25, 0.5, 1.0, 1.0]


def test_guard_detects_a_sustained_rise_not_one_hard_batch() -> None:
    guard = DivergenceGuard(factor=1.5, beta=0.5, warmup_steps=3)
    for step in range(10):
        assert guard.observe(step, 2.0, 0.3) is None
    guard.beta = 0.8
    assert guard.observe(10, 5.0, 0.3) is None  # one hard batch: EMA 0.8*2 + 0.2*5 = 2.6 < 1.5 x 2
    for step in range(11, 30):
        reason = guard.observe(step, 6.0, 0.3)
        if reason:
            break
    assert reason and "its best 2" in reason
    latent = DivergenceGuard(factor=None, beta=0.0, warmup_steps=1, latent_limit=4.0)
    assert latent.observe(0, 1.0, 3.0) is None and "latent RMS 5" in latent.observe(1, 1.0, 5.0)


def test_divergence_rolls_back_weights_and_halves_the_lr(caplog) -> None:
    guard = DivergenceGuard(factor=1.5, beta=0.0, warmup_steps=1, action="rollback", snapshot_every=100,
                            lr_factor=0.5)
    task = tiny_task(lr_warmup_steps=2)
    task.divergence = guard
    opts = task.configure_optimizers()
    ctx = Ctx(opts)
    task.training_step(batch(0), 0, ctx)  # snapshot after the first healthy step
    good = {k: v.clone() for k, v in task.autoencoder.state_dict().items()}
    for step in (1, 2):
        task.training_step(batch(0), step, ctx)  # weights move on
    assert any(not torch.equal(good[k], v) for k, v in task.autoencoder.state_dict().items())
    base = opts["generator"][1].base_lrs[0]
    loud = {"audio": batch(0)["audio"] * 30}  # a loss far above the best so far
    with caplog.at_level(logging.WARNING, logger="musicdiff.trainer"):
        metrics = task.training_step(loud, 3, ctx)
    assert metrics["rollbacks"] == 1 and metrics["divergence_events"] == 1
    assert all(torch.equal(good[k], v) for k, v in task.autoencoder.state_dict().items())
    assert opts["generator"][1].base_lrs[0] == pytest.approx(base / 2)
    msg = [r.getMessage() for r in caplog.records if "divergence at step 3" in r.getMessage()]
    assert msg and "rolled back to the snapshot of step 0" in msg[0] and "multiplied the learning rates by 0.5" in msg[0]


def test_warn_action_only_logs(caplog) -> None:
    task = tiny_task()
    task.divergence = DivergenceGuard(factor=1.5, beta=0.0, warmup_steps=1, action="warn")
    ctx = Ctx(task.configure_optimizers())
    task.training_step(batch(0), 0, ctx)
    before = {k: v.clone() for k, v in task.autoencoder.state_dict().items()}
    with caplog.at_level(logging.WARNING, logger="musicdiff.trainer"):
        metrics = task.training_step({"audio": batch(0)["audio"] * 30}, 1, ctx)
    assert metrics["divergence_events"] == 1 and metrics["rollbacks"] == 0
    assert any("divergence at step 1" in r.getMessage() and "lr_warmup_steps" in r.getMessage() for r in caplog.records)
    assert any(not torch.equal(before[k], v) for k, v in task.autoencoder.state_dict().items())  # it trained


def test_nonfinite_latents_skip_both_updates_with_a_warning(caplog) -> None:
    task = tiny_task()
    ctx = Ctx(task.configure_optimizers())
    before = {k: v.clone() for k, v in task.autoencoder.state_dict().items()}
    with torch.no_grad():
        next(iter(task.autoencoder.encoder.parameters())).fill_(float("nan"))
    with caplog.at_level(logging.WARNING, logger="musicdiff.trainer"):
        metrics = task.training_step(batch(0), 7, ctx)
    assert metrics["nonfinite_latents"] == 1 and metrics["skipped_generator"] == 1 and ctx.skipped == ["generator"]
    assert any("non-finite latents at step 7" in r.getMessage() for r in caplog.records)
    changed = [k for k, v in task.autoencoder.state_dict().items() if not torch.equal(before[k], v)
               and torch.isfinite(v).all()]
    assert changed == []  # nothing but the deliberately broken weights differs


def test_guard_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="action"):
        DivergenceGuard(action="explode")
    with pytest.raises(ValueError, match="factor must be > 1"):
        DivergenceGuard(factor=0.9)
    with pytest.raises(Exception, match="latent_limit must be > 0"):  # hydra wraps the ValueError
        tiny_task(latent_limit=-1.0)
