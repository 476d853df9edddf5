"""One training step in musicdiff and in stable-audio-tools' own ``DiffusionCondTrainingWrapper`` on the same
batch, timesteps and noise: the loss and every DiT gradient must agree (fine-tuning parity tests)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from tests.reference.conftest import WINDOW_LATENTS


class _Ctx:
    """The trainer's StepContext reduced to what one step needs: backward, remember the loss."""

    def __init__(self) -> None:
        self.loss = None

    def backward_step(self, name, loss):  # noqa: ARG002
        loss.backward()
        self.loss = loss.detach()
        return True


def assert_training_step_matches_sat(task, sat, sat_model, metadata: list[dict], monkeypatch, seed: int = 3,
                                     **wrapper_kwargs) -> None:
    """Run ``task.training_step`` and SAT's wrapper step with t and noise fixed; compare loss and DiT gradients.

    Args:
        task: a musicdiff DiffusionTask in train mode built from the same weights as ``sat_model``.
        sat: the ``stable_audio_tools`` package with ``training.diffusion`` loaded.
        sat_model: SAT's ``ConditionedDiffusionModelWrapper`` (left with zero grads, in eval mode).
        metadata: prompts and timing of the batch's items.
        monkeypatch: pytest's fixture (``torch.randn`` / ``torch.randn_like`` return the fixed noise).
        seed: seed of the latents, t and noise.
        wrapper_kwargs: extra arguments of ``DiffusionCondTrainingWrapper`` (e.g. ``timestep_sampler``).
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(metadata), task.dit.io_channels, WINDOW_LATENTS, generator=gen)
    t = torch.rand(len(metadata), generator=gen)
    noise = torch.randn(x.shape, generator=gen)
    real_randn, real_randn_like = torch.randn, torch.randn_like

    def randn(*args, **kwargs):
        shape = tuple(args[0]) if args and isinstance(args[0], (tuple, list, torch.Size)) else tuple(args)
        return noise.clone() if shape == tuple(x.shape) else real_randn(*args, **kwargs)

    def randn_like(ref, *args, **kwargs):
        return noise.clone() if ref.shape == x.shape else real_randn_like(ref, *args, **kwargs)

    # musicdiff: the task's own training_step
    monkeypatch.setattr(task.diffusion, "timestep_density", lambda n, device, generator=None: t.clone())
    ctx = _Ctx()
    with monkeypatch.context() as m:
        m.setattr(torch, "randn", randn)
        task.training_step({"latents": x.clone(), "metadata": [dict(md) for md in metadata]}, 0, ctx)

    # stable-audio-tools: its training wrapper on the model the release was written from
    wrapper = sat.training.diffusion.DiffusionCondTrainingWrapper(sat_model, lr=1e-4, pre_encoded=True, use_ema=False,
                                                                  cfg_dropout_prob=0.0, **wrapper_kwargs)
    wrapper.rng = SimpleNamespace(draw=lambda n: t.clone()[:, None])
    wrapper.log_dict = lambda *a, **k: None
    monkeypatch.setattr(type(wrapper), "trainer", SimpleNamespace(
        optimizers=[SimpleNamespace(param_groups=[{"lr": 1e-4}])]), raising=False)
    meta = [{**md, "padding_mask": [torch.ones(WINDOW_LATENTS, dtype=torch.bool)]} for md in metadata]
    sat_model.train()
    sat_model.zero_grad()
    try:
        with monkeypatch.context() as m:
            m.setattr(torch, "randn_like", randn_like)
            ref_loss = wrapper.training_step((x.clone(), meta), 0)
        ref_loss.backward()
        torch.testing.assert_close(ctx.loss, ref_loss.detach(), rtol=1e-5, atol=1e-7)
        ref_grads = dict(sat_model.model.model.named_parameters())
        for key, p in task.dit.named_parameters():
            ref = ref_grads[key].grad
            torch.testing.assert_close(p.grad, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()) + 1e-12,
                                       msg=lambda s, k=key: f"grad {k}: {s}")
        assert len(ref_grads) == len(list(task.dit.parameters()))
    finally:
        sat_model.zero_grad()
        sat_model.eval()
