"""Tests of the InverseLR schedule and the lr_schedule configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.training.lr_schedules import InverseLR

CONF = Path(__file__).resolve().parents[2] / "conf"


def _opt(lr=1e-3):
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def _reference(step, base, inv_gamma, power, warmup, final_lr):
    """k-diffusion / stable-audio-tools InverseLR formula."""
    return (1 - warmup ** (step + 1)) * max(final_lr, base * (1 + step / inv_gamma) ** -power)


@pytest.mark.parametrize("kw", [dict(inv_gamma=100, power=0.5, warmup=0.9, final_lr=0.0),
                                dict(inv_gamma=10, power=2.0, warmup=0.0, final_lr=1e-4)])
def test_inverse_lr_matches_formula(kw):
    opt = _opt()
    sched = InverseLR(opt, **kw)
    for step in range(300):
        lr = opt.param_groups[0]["lr"]
        assert lr == pytest.approx(_reference(step, 1e-3, **kw), rel=1e-9)
        opt.step()
        sched.step()


def test_inverse_lr_floor_warmup_and_resume():
    opt = _opt()
    sched = InverseLR(opt, inv_gamma=1, power=1.0, warmup=0.5, final_lr=2e-4)
    lrs = []
    for _ in range(50):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.5e-3) and lrs[-1] == pytest.approx(2e-4, rel=1e-6)
    state = sched.state_dict()
    opt2 = _opt()
    sched2 = InverseLR(opt2, inv_gamma=1, power=1.0, warmup=0.5, final_lr=2e-4)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    opt.step()
    sched.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])


def test_inverse_lr_validation():
    with pytest.raises(ValueError, match="warmup"):
        InverseLR(_opt(), warmup=1.0)
    with pytest.raises(ValueError, match="inv_gamma"):
        InverseLR(_opt(), inv_gamma=0)


@pytest.mark.parametrize("option", ["inverse", "constant"])
def test_schedule_and_optimiser_configs(option):
    optim = instantiate(OmegaConf.load(CONF / "optim" / "adamw.yaml"))
    opt = optim([torch.nn.Parameter(torch.zeros(3))])
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["lr"] == 5e-5 and opt.defaults["betas"] == (0.9, 0.999)
    assert opt.defaults["weight_decay"] == 1e-3
    sched = instantiate(OmegaConf.load(CONF / "lr_schedule" / f"{option}.yaml"))(opt)
    for _ in range(3):
        opt.step()
        sched.step()
    lr = opt.param_groups[0]["lr"]
    assert 0 < lr <= 5e-5
    if option == "constant":
        assert lr == pytest.approx(5e-5)
