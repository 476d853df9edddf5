"""Parity of the rectified-flow training step with stable-audio-tools 0.0.19.

SAT's ``DiffusionCondTrainingWrapper.training_step`` (and its ``MSELoss``/``MultiLoss``) is run
unmodified: its source is taken from the installed package and executed with a stand-in ``self``
(its module imports pytorch-lightning, wandb and audiotools, which the test environment lacks). Both
sides train the same random SAT DiT on the same batch from the same seed, so ``t`` (every density
SAT offers except its Sobol ``uniform``, with and without the length-dependent shift), the noise,
``x_t``, the velocity target, the loss and the parameter gradients must agree.
"""

from __future__ import annotations

import ast
import random
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from musicdiff.diffusion import (
    LogitNormalTimesteps,
    LogSNRTimesteps,
    RectifiedFlowLoss,
    TimeShift,
    TruncatedLogitNormalTimesteps,
)
from tests.helpers.stable_audio_tools import load_sat, randomize_

sat = load_sat()


def _sat_defs(relpath: str, names: dict[str, list[str] | None], namespace: dict) -> dict:
    """Execute SAT's top-level classes/functions ``names`` (a class: only the listed methods)."""
    path = Path(sat.__file__).parent / relpath
    tree = ast.parse(path.read_text())
    body = []
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name in names:
            methods = names[node.name]
            if isinstance(node, ast.ClassDef) and methods is not None:
                node.body = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name in methods]
            body.append(node)
    assert {n.name for n in body} == set(names), f"SAT {relpath} changed"
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def sat_step():
    from stable_audio_tools.inference import sampling as sat_sampling

    ns = {"torch": torch, "F": F, "nn": torch.nn, "tp": __import__("typing"), "random": random,
          "time": __import__("time").time, "mmd": None,
          "pl": types.SimpleNamespace(LightningModule=object)}  # the wrapper's base class: only its step runs
    ns.update({k: getattr(sat_sampling, k) for k in ("get_alphas_sigmas", "truncated_logistic_normal_rescaled",
                                                    "sample_timesteps_logsnr")})
    _sat_defs("training/losses/losses.py", {"LossModule": None, "MSELoss": None, "MultiLoss": None}, ns)
    _sat_defs("training/diffusion.py", {"Profiler": None, "DiffusionCondTrainingWrapper": ["training_step"]}, ns)
    return ns


@pytest.fixture(scope="module")
def dit():
    from stable_audio_tools.models.dit import DiffusionTransformer

    torch.manual_seed(0)
    model = DiffusionTransformer(io_channels=4, embed_dim=64, depth=1, num_heads=1, cond_token_dim=8,
                                 global_cond_dim=6, diffusion_objective="rectified_flow")
    randomize_(model, seed=3)
    return model


class _SatDiffusion:
    """The ``self.diffusion`` SAT's step calls: conditioner, no pretransform, the DiT."""

    def __init__(self, model, cond, dist_shift):
        self.model, self.cond, self.dist_shift, self.pretransform = model, cond, dist_shift, None
        self.conditioner = lambda metadata, device: cond

    def __call__(self, x, t, cond, cfg_dropout_prob=0.0, **extra):
        assert cfg_dropout_prob == 0.0 and not extra
        return self.model(x, t, cross_attn_cond=cond["cross_attn_cond"], global_embed=cond["global_cond"])


def _run_sat(sat_step, dit, x0, cond, sampler, dist_shift, seed):
    from stable_audio_tools.inference.sampling import DistributionShift

    ns = sat_step
    shift = DistributionShift(**dist_shift) if dist_shift is not None else None
    fake = types.SimpleNamespace(
        diffusion=_SatDiffusion(dit, cond, shift), mask_padding=False, mask_padding_dropout=0.0,
        cfg_dropout_prob=0.0, timestep_sampler=sampler, mean_logsnr=-1.2, std_logsnr=2.0, p_one_shot=0.0,
        diffusion_objective="rectified_flow", pre_encoded=True, inpainting_config=None, log_loss_info=False,
        losses=ns["MultiLoss"]([ns["MSELoss"]("output", "targets", mask_key=None)]), device="cpu",
        log_dict=lambda *a, **k: None,
        trainer=types.SimpleNamespace(optimizers=[types.SimpleNamespace(param_groups=[{"lr": 0.0}])]),
        rng=torch.quasirandom.SobolEngine(1, scramble=True))
    metadata = [{"padding_mask": [torch.ones(x0.shape[-1], dtype=torch.bool)]} for _ in range(x0.shape[0])]
    torch.manual_seed(seed)
    dit.zero_grad()
    loss = ns["DiffusionCondTrainingWrapper"].training_step(fake, (x0, metadata), 0)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in dit.named_parameters()}


DENSITIES = {
    "logit_normal": LogitNormalTimesteps(0.0, 1.0),
    "trunc_logit_normal": TruncatedLogitNormalTimesteps(),
    "log_snr": LogSNRTimesteps(-1.2, 2.0),
}


@pytest.mark.parametrize(("sampler", "dist_shift"), [
    ("logit_normal", None), ("trunc_logit_normal", None), ("log_snr", None),
    ("logit_normal", {"base_shift": 0.5, "max_shift": 1.15, "min_length": 8, "max_length": 64}),
])
def test_rf_training_step_matches_sat(sat_step, dit, sampler, dist_shift):
    gen = torch.Generator().manual_seed(11)
    x0 = torch.randn(3, 4, 24, generator=gen)
    cond = {"cross_attn_cond": torch.randn(3, 5, 8, generator=gen), "global_cond": torch.randn(3, 6, generator=gen)}
    ref_loss, ref_grads = _run_sat(sat_step, dit, x0, cond, sampler, dist_shift, seed=7)

    loss_fn = RectifiedFlowLoss(DENSITIES[sampler], TimeShift(**dist_shift) if dist_shift else None)
    dit.zero_grad()
    net = lambda x, t, **c: dit(x, t, cross_attn_cond=c["cross_attn_cond"], global_embed=c["global_cond"])  # noqa: E731
    loss, info = loss_fn(net, x0, cond, generator=torch.Generator().manual_seed(7))
    loss.backward()
    torch.testing.assert_close(loss.detach(), ref_loss, rtol=1e-5, atol=0)
    for name, p in dit.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name], rtol=1e-5, atol=1e-7, msg=lambda m: f"{name}: {m}")
    assert 0 < float(info["t"].min()) and float(info["t"].max()) < 1
