"""Diffusion-task demos: the task's sampler spec (conf/sampler/*), the inference fast paths, no effect on training."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import Dataset

import musicdiff.training.tasks.diffusion as diffusion_task
from musicdiff.sampling.guidance import CFGDenoiser
from musicdiff.sampling.samplers import sample_euler
from musicdiff.sampling.spec import SamplerSpec
from musicdiff.tracking.base import NullLogger
from musicdiff.training.tasks.diffusion import DiffusionTask, default_sampler
from musicdiff.training.trainer import Trainer
from tests.training.test_diffusion_task import FakeLogger, _task

CONF = Path(__file__).resolve().parents[2] / "conf"


class SpySampler:
    """Euler, recording the schedule, the guidance scale and how many modules run a fast path."""

    def __init__(self, task: DiffusionTask) -> None:
        self.task, self.calls = task, []

    def __call__(self, model, x, sigmas, extra_args=None, callback=None, disable=None):
        switched = sum("forward" in vars(m) for m in self.task.modules())
        self.calls.append({"sigmas": sigmas.clone(), "model": model, "switched": switched})
        return sample_euler(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable)


def _spied(task: DiffusionTask) -> SpySampler:
    spy = SpySampler(task)
    task.sampler = SamplerSpec(spy, steps=3, cfg_scale=2.5, sigma_min=0.1, sigma_max=10.0)
    return spy


def _switched(task: DiffusionTask) -> int:
    return sum("forward" in vars(m) for m in task.modules())


def test_the_default_demo_sampler_is_conf_sampler_dpmpp_2m():
    conf = instantiate(OmegaConf.load(CONF / "sampler" / "dpmpp_2m.yaml"))
    task = _task()
    plain = DiffusionTask(task.dit, task.conditioner, task.diffusion, partial(torch.optim.SGD, lr=0.1))
    for spec in (default_sampler(), plain.sampler):
        assert spec.fn is conf.fn.func and spec.schedule is conf.schedule.func  # the conf binds no options
        assert not conf.fn.args and not conf.fn.keywords and not conf.schedule.keywords
        assert repr(spec) == repr(conf) and spec.cfg_interval == conf.cfg_interval
        assert spec.cfg_rescale == conf.cfg_rescale


def test_demo_samples_with_the_sampler_spec_under_the_fast_paths(monkeypatch):
    """The demo runs the spec's sampler, steps, sigma range and guidance scale, with the DiT's inference
    fast paths switched on (same samples as the plain modules to float32 rounding) and off again after."""
    task = _task()
    spy = _spied(task)
    task.eval()
    logger = FakeLogger()
    task.demo(3, logger)
    (call,) = spy.calls
    assert len(call["sigmas"]) == 4 and call["sigmas"][[0, -2]].tolist() == pytest.approx([10.0, 0.1], rel=1e-5)
    assert isinstance(call["model"], CFGDenoiser) and call["model"].scale == 2.5
    assert call["switched"] > 0 and _switched(task) == 0  # fast paths during sampling only
    assert [key for key, *_ in logger.audio] == ["demo/0", "demo/1"]
    fast = task.generate(["up", "down"], 0.4)
    monkeypatch.setattr(diffusion_task, "fast_inference", lambda *m, **kw: torch.no_grad())
    plain = task.generate(["up", "down"], 0.4)
    assert spy.calls[-1]["switched"] == 0
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


class Latents(Dataset):
    """'up' -> latents +1, 'down' -> -1."""

    def __len__(self):
        return 16

    def __getitem__(self, i):
        sign = 1.0 if i % 2 == 0 else -1.0
        return {"latents": torch.full((4, 8), sign), "padding_mask": torch.ones(8, dtype=torch.bool),
                "prompt": "up" if sign > 0 else "down", "seconds_start": 0.0, "seconds_total": 0.4}


def test_demos_during_training_leave_training_unchanged(tmp_path):
    """Demos after every step (fast paths on, then off) end with the same weights, bit for bit, as a run
    demoing only at the end; the parameters and state-dict keys are those of the plain task."""
    runs = {}
    for demo_every in (1, 0):
        task = _task(ema_beta=0.9)
        spy = _spied(task)
        keys = list(task.state_dict())
        params = [id(p) for p in task.parameters()]
        trainer = Trainer(max_steps=4, batch_size=4, demo_every=demo_every, log_every=1, checkpoint_every=0,
                          progress=False, cpu=True)
        metrics = trainer.fit(task, Latents(), NullLogger(), run_dir=tmp_path / str(demo_every))
        assert metrics["step"] == 4 and torch.isfinite(torch.tensor(metrics["loss"]))
        assert list(task.state_dict()) == keys and [id(p) for p in task.parameters()] == params
        assert _switched(task) == 0 and all(c["switched"] > 0 for c in spy.calls)
        runs[demo_every] = (task, len(spy.calls))
    (demoed, n_demoed), (plain, n_plain) = runs[1], runs[0]
    assert (n_demoed, n_plain) == (4, 1)
    for (name, a), b in zip(demoed.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("overrides", [["+task.demo_steps=5"], ["task=arc", "+task.demo_cfg_scale=1.0"]])
def test_the_removed_demo_sampler_keys_are_rejected_in_one_line(overrides):
    """The sampler group owns steps, sigmas and guidance: old ``task.demo_*`` keys fail before any build,
    also for ARC, whose ``**kwargs`` go to DiffusionTask."""
    from hydra import compose, initialize_config_dir

    from musicdiff.config.validate import ConfigError, validate_targets

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    key = overrides[-1][1:].split("=")[0]
    with pytest.raises(ConfigError, match=rf"Unknown config key '{key}'.*'sampler'") as err:
        validate_targets(cfg)
    assert "\n" not in str(err.value)
