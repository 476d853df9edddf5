"""Rectified-flow loss, timestep densities, flow denoisers and objective lookup."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.diffusion import (
    FlowDenoiser,
    FlowSigmaDenoiser,
    LogitNormalTimesteps,
    LogSNRTimesteps,
    RectifiedFlowLoss,
    TimeShift,
    TruncatedLogitNormalTimesteps,
    UniformTimesteps,
    VDenoiser,
    VFlowDenoiser,
    VObjectiveLoss,
    make_denoiser,
    objective_of,
)

CONF = Path(__file__).resolve().parents[2] / "conf" / "diffusion"


class OracleVelocity(torch.nn.Module):
    """Exact velocity eps − x0 for a known x0 (eps recovered from x_t)."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, x, t, **cond):
        tb = t[:, None, None]
        eps = (x - (1 - tb) * self.x0) / tb
        return eps - self.x0


def test_rf_loss_is_zero_for_the_oracle_and_one_plus_var_for_zero():
    x0 = torch.randn(16, 4, 32)
    loss_fn = RectifiedFlowLoss(UniformTimesteps(0.05, 1.0))
    loss, info = loss_fn(OracleVelocity(x0), x0, {"cross_attn_cond": None})
    assert loss.item() < 1e-8 and info["t"].shape == (16,)
    zero = loss_fn(lambda x, t, **c: torch.zeros_like(x), x0)[0].item()
    assert zero == pytest.approx(2.0, rel=0.1)  # E[(eps − x0)²] = 1 + E[x0²]
    wrong_sign = loss_fn(lambda x, t, **c: -OracleVelocity(x0)(x, t), x0)[0].item()
    assert wrong_sign > 4.0  # the target is eps − x0, not x0 − eps


def test_rf_loss_masks_padding_and_checks_inputs():
    x0 = torch.randn(2, 3, 10)
    mask = torch.zeros(2, 10, dtype=torch.bool)
    mask[:, :7] = True

    def bad_tail(x, t, **c):
        v = OracleVelocity(x0)(x, t)
        v[..., 7:] = 5.0
        return v

    loss_fn = RectifiedFlowLoss()
    assert loss_fn(bad_tail, x0, padding_mask=mask)[0].item() < 1e-8
    assert loss_fn(bad_tail, x0)[0].item() > 1.0
    with pytest.raises(ValueError, match="x0 must be"):
        loss_fn(bad_tail, x0[0])
    with pytest.raises(ValueError, match="objective"):
        RectifiedFlowLoss(objective="eps")


@pytest.mark.parametrize(("density", "mean_range"), [
    (LogitNormalTimesteps(), (0.45, 0.55)),
    (TruncatedLogitNormalTimesteps(), (0.5, 0.65)),  # flipped: mass at high noise
    (LogSNRTimesteps(), (0.6, 0.75)),  # mean λ = −1.2 favours noise
])
def test_densities_stay_in_the_unit_interval_and_are_seeded(density, mean_range):
    g = torch.Generator().manual_seed(0)
    t = density(20000, "cpu", g)
    assert t.shape == (20000,) and 0 <= float(t.min()) and float(t.max()) <= 1
    assert mean_range[0] < float(t.mean()) < mean_range[1]
    torch.testing.assert_close(density(8, "cpu", torch.Generator().manual_seed(1)),
                               density(8, "cpu", torch.Generator().manual_seed(1)))


def test_truncated_logit_normal_is_the_conditioned_flipped_logit_normal():
    """t = 1 − (s − left)/(1 − left) with s logit-normal conditioned on s >= left."""
    left = 0.075
    t = TruncatedLogitNormalTimesteps(left=left)(200000, "cpu", torch.Generator().manual_seed(0))
    normal = torch.distributions.Normal(0.0, 1.0)
    lo = normal.cdf(torch.logit(torch.tensor(left)))
    for q in (0.2, 0.5, 0.9):  # P[t > q] = P[s < left + (1 − q)(1 − left) | s >= left]
        s_q = torch.tensor(left + (1 - q) * (1 - left))
        want = (normal.cdf(torch.logit(s_q)) - lo) / (1 - lo)
        assert float((t > q).float().mean()) == pytest.approx(float(want), abs=5e-3)


def test_time_shift_moves_mass_to_noise_for_long_sequences():
    shift = TimeShift(base_shift=0.5, max_shift=1.15, min_length=256, max_length=4096)
    t = torch.linspace(0, 1, 11)
    short, long = shift(t, 256), shift(t, 4096)
    assert short[0] == 0 and long[-1] == 1
    assert (long[1:-1] > short[1:-1]).all() and (short[1:-1] > t[1:-1]).all()
    s = math.exp(1.15)  # the SD3 form t' = s t / (1 + (s − 1) t)
    torch.testing.assert_close(long[1:-1], s * t[1:-1] / (1 + (s - 1) * t[1:-1]))


def _gaussian_rf(mu=0.4, s=0.8):
    def net(x, t, **c):
        tb = t.reshape(-1, 1, 1)
        x0 = mu + (1 - tb) * s**2 / ((1 - tb) ** 2 * s**2 + tb**2) * (x - (1 - tb) * mu)
        return (x - x0) / tb
    return net


def test_flow_denoisers_agree_across_spaces():
    """The same x0 estimate from a flow sample at t and the VE sample x_t/(1−t) at σ = t/(1−t)."""
    net = _gaussian_rf()
    x = torch.randn(3, 2, 5)
    t = torch.tensor([0.2, 0.5, 0.9])
    sig = t / (1 - t)
    d_flow = FlowDenoiser(net)(x, t)
    d_ve = FlowSigmaDenoiser(net)(x / (1 - t)[:, None, None], sig)
    torch.testing.assert_close(d_flow, d_ve, rtol=1e-5, atol=1e-6)

    def v_net(x_vp, tau, **c):  # an arbitrary network: the two v wrappers must call it alike
        return torch.tanh(x_vp) * (1 + tau[:, None, None])

    torch.testing.assert_close(VFlowDenoiser(v_net)(x, t), VDenoiser(v_net)(x / (1 - t)[:, None, None], sig),
                               rtol=1e-5, atol=1e-6)
    assert torch.isfinite(VFlowDenoiser(v_net)(x, torch.ones(3))).all()  # t = 1 is finite in flow time


def test_make_denoiser_and_objective_lookup():
    net = torch.nn.Identity()
    assert isinstance(make_denoiser(net, "v", "ve"), VDenoiser)
    assert isinstance(make_denoiser(net, "v", "flow"), VFlowDenoiser)
    assert isinstance(make_denoiser(net, "rectified_flow", "flow"), FlowDenoiser)
    assert isinstance(make_denoiser(net, "rf_denoiser", "ve"), FlowSigmaDenoiser)
    with pytest.raises(ValueError, match="space"):
        make_denoiser(net, "v", "sde")
    rf_cfg, v_cfg = OmegaConf.load(CONF / "rectified_flow.yaml"), OmegaConf.load(CONF / "v_objective.yaml")
    assert objective_of(rf_cfg) == "rectified_flow" and objective_of(v_cfg) == "v"
    assert objective_of(OmegaConf.merge(rf_cfg, {"objective": "rf_denoiser"})) == "rf_denoiser"
    assert objective_of({"_target_": "musicdiff.diffusion.RectifiedFlowLoss"}) == "rectified_flow"
    assert objective_of(None) == "v"  # configs from before rectified flow
    assert objective_of(instantiate(rf_cfg)) == "rectified_flow" and objective_of(VObjectiveLoss()) == "v"
    with pytest.raises(ValueError, match="objective"):
        objective_of({"_target_": "my.OtherLoss"})


def test_rectified_flow_config_instantiates():
    loss = instantiate(OmegaConf.load(CONF / "rectified_flow.yaml"))
    assert isinstance(loss, RectifiedFlowLoss) and isinstance(loss.timestep_density, LogitNormalTimesteps)
    x0 = torch.randn(2, 3, 8)
    assert loss(OracleVelocity(x0), x0)[0].item() < 1e-8
