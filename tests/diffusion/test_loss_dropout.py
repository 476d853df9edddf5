"""Tests of the v-objective loss, timestep densities and CFG dropout."""

from __future__ import annotations

import pytest
import torch

from musicdiff.diffusion import (
    LogitNormalTimesteps,
    UniformTimesteps,
    VObjectiveLoss,
    cfg_dropout,
    null_cond,
    t_to_alpha_sigma,
)


class OracleV(torch.nn.Module):
    """Exact v for a known x0 on real frames; garbage on frames past ``valid``."""

    def __init__(self, x0, valid=None):
        super().__init__()
        self.x0, self.valid = x0, valid
        self.seen = {}

    def forward(self, x, t, **cond):
        self.seen = cond
        a, s = (c[:, None, None] for c in t_to_alpha_sigma(t))
        v = (a * x - self.x0) / s
        if self.valid is not None:
            v[..., self.valid:] = 10.0
        return v


def test_loss_is_zero_for_oracle_and_positive_otherwise():
    x0 = torch.randn(8, 4, 16)
    loss_fn = VObjectiveLoss(UniformTimesteps(0.01, 1.0))
    loss, info = loss_fn(OracleV(x0), x0, {"global_cond": torch.zeros(8, 2), "cross_attn_cond": None})
    assert loss.item() < 1e-8
    assert info["t"].shape == (8,) and info["mse"].shape == (8,)
    zero_model = lambda x, t, **c: torch.zeros_like(x)  # noqa: E731
    assert loss_fn(zero_model, x0)[0].item() > 0.5  # E[v²] = 1 for unit-variance data


def test_loss_passes_only_non_none_conditioning():
    x0 = torch.randn(2, 4, 8)
    model = OracleV(x0)
    VObjectiveLoss(UniformTimesteps(0.01, 1.0))(model, x0, {"global_cond": torch.zeros(2, 3), "cross_attn_cond": None})
    assert set(model.seen) == {"global_cond"}


def test_padding_mask_excludes_padded_frames():
    x0 = torch.randn(4, 3, 10)
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[:, :6] = True
    model = OracleV(x0, valid=6)
    loss_fn = VObjectiveLoss(UniformTimesteps(0.01, 1.0))
    assert loss_fn(model, x0, padding_mask=mask)[0].item() < 1e-8
    assert loss_fn(model, x0)[0].item() > 1.0
    with pytest.raises(ValueError, match="padding_mask"):
        loss_fn(model, x0, padding_mask=mask[:, :5])


def test_loss_determinism_with_generator():
    x0 = torch.randn(4, 3, 10)
    model = lambda x, t, **c: x * t[:, None, None]  # noqa: E731
    loss_fn = VObjectiveLoss()
    a = loss_fn(model, x0, generator=torch.Generator().manual_seed(3))[0]
    b = loss_fn(model, x0, generator=torch.Generator().manual_seed(3))[0]
    c = loss_fn(model, x0, generator=torch.Generator().manual_seed(4))[0]
    assert a == b and a != c


def test_timestep_densities():
    g = torch.Generator().manual_seed(0)
    u = UniformTimesteps()(20000, generator=g)
    assert 0 <= u.min() and u.max() <= 1 and abs(u.mean().item() - 0.5) < 0.01
    ln = LogitNormalTimesteps(0.0, 1.0)(20000, generator=g)
    assert 0 < ln.min() and ln.max() < 1 and abs(ln.median().item() - 0.5) < 0.02
    assert ln.std() < u.std()  # concentrated on the middle
    with pytest.raises(ValueError):
        UniformTimesteps(0.5, 0.2)


def _cond(b=10000):
    return {
        "cross_attn_cond": torch.ones(b, 3, 4),
        "cross_attn_mask": torch.ones(b, 3, dtype=torch.bool),
        "global_cond": torch.ones(b, 2),
    }


def test_cfg_dropout_rate_and_what_is_dropped():
    cond = _cond()
    out = cfg_dropout(cond, 0.1, generator=torch.Generator().manual_seed(0))
    dropped = (out["cross_attn_cond"].abs().sum(dim=(1, 2)) == 0).float()
    kept = (out["cross_attn_cond"] == 1).all(dim=2).all(dim=1).float()
    assert torch.all(dropped + kept == 1)  # whole items are dropped, never parts
    assert abs(dropped.mean().item() - 0.1) < 0.012  # 4 binomial standard deviations
    assert out["cross_attn_mask"] is cond["cross_attn_mask"] and out["global_cond"] is cond["global_cond"]
    assert cond["cross_attn_cond"].min() == 1  # input not modified in place


def test_cfg_dropout_extremes_and_null_cond():
    cond = _cond(50)
    out = cfg_dropout(cond, 0.0)
    assert out["cross_attn_cond"] is cond["cross_attn_cond"]
    assert cfg_dropout(cond, 1.0)["cross_attn_cond"].abs().sum() == 0
    assert cfg_dropout({"cross_attn_cond": None}, 0.5)["cross_attn_cond"] is None
    null = null_cond(cond)
    assert null["cross_attn_cond"].abs().sum() == 0 and null["global_cond"] is cond["global_cond"]
    with pytest.raises(ValueError, match="probability"):
        cfg_dropout(cond, 1.5)
