"""Fine-tuning a stable-audio-tools checkpoint: ``musicdiff-train init_from=<model.safetensors>`` builds
the task from the SAT release, and one training step equals SAT's own ``DiffusionCondTrainingWrapper``
step (loss and every DiT gradient) on the same batch, timesteps and noise."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from hydra.utils import instantiate

from musicdiff.reference.sat_reference import load_sat_training
from tests.reference.conftest import WINDOW_LATENTS

METADATA = [{"prompt": "orchestral film score", "seconds_start": 0.0, "seconds_total": 30.0},
            {"prompt": "lofi drums", "seconds_start": 2.0, "seconds_total": 10.0}]


class _Ctx:
    """The trainer's StepContext reduced to what one step needs: backward, remember the loss."""

    def __init__(self) -> None:
        self.loss = None

    def backward_step(self, name, loss):  # noqa: ARG002
        loss.backward()
        self.loss = loss.detach()
        return True


def test_init_from_sat_checkpoint_trains_like_stable_audio_tools(sat_release, small_pair, t5_768, compose_cfg,
                                                                  monkeypatch):
    from musicdiff.cli.train import pretrained_parts

    sat = load_sat_training("training.diffusion")
    monkeypatch.setenv("MUSICDIFF_T5_PATH", t5_768)
    cfg = compose_cfg("train", [f"init_from={sat_release / 'model.safetensors'}", "task.cfg_dropout_prob=0.0",
                                "logger=none"])
    parts = pretrained_parts(cfg)
    assert sorted(parts) == ["autoencoder", "conditioner", "dit"]
    assert cfg.dit.io_channels == 16 and cfg.conditioner.conditioners.prompt.model_name == t5_768
    task = instantiate(cfg.task, **parts).train()

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 16, WINDOW_LATENTS, generator=gen)
    t = torch.rand(2, generator=gen)
    noise = torch.randn(x.shape, generator=gen)
    real_randn, real_randn_like = torch.randn, torch.randn_like

    def randn(*args, **kwargs):
        shape = tuple(args[0]) if args and isinstance(args[0], (tuple, list, torch.Size)) else tuple(args)
        return noise.clone() if shape == tuple(x.shape) else real_randn(*args, **kwargs)

    def randn_like(ref, *args, **kwargs):
        return noise.clone() if ref.shape == x.shape else real_randn_like(ref, *args, **kwargs)

    # musicdiff: the task's own training_step, t and noise fixed
    monkeypatch.setattr(task.diffusion, "timestep_density", lambda n, device, generator=None: t.clone())
    ctx = _Ctx()
    with monkeypatch.context() as m:
        m.setattr(torch, "randn", randn)
        task.training_step({"latents": x.clone(), "metadata": [dict(md) for md in METADATA]}, 0, ctx)

    # stable-audio-tools: its training wrapper on the model the release was written from
    sat_model = small_pair[0]
    wrapper = sat.training.diffusion.DiffusionCondTrainingWrapper(sat_model, lr=1e-4, pre_encoded=True, use_ema=False,
                                                                  cfg_dropout_prob=0.0)
    wrapper.rng = SimpleNamespace(draw=lambda n: t.clone()[:, None])
    wrapper.log_dict = lambda *a, **k: None
    monkeypatch.setattr(type(wrapper), "trainer", SimpleNamespace(
        optimizers=[SimpleNamespace(param_groups=[{"lr": 1e-4}])]), raising=False)
    meta = [{**md, "padding_mask": [torch.ones(WINDOW_LATENTS, dtype=torch.bool)]} for md in METADATA]
    sat_model.train()
    sat_model.zero_grad()
    try:
        with monkeypatch.context() as m:
            m.setattr(torch, "randn_like", randn_like)
            ref_loss = wrapper.training_step((x.clone(), meta), 0)
        ref_loss.backward()
        torch.testing.assert_close(ctx.loss, ref_loss.detach(), rtol=1e-5, atol=1e-7)
        ref_grads = dict(sat_model.model.model.named_parameters())
        checked = 0
        for key, p in task.dit.named_parameters():
            ref = ref_grads[key].grad
            torch.testing.assert_close(p.grad, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()) + 1e-12,
                                       msg=lambda s, k=key: f"grad {k}: {s}")
            checked += 1
        assert checked == len(ref_grads)
    finally:
        sat_model.zero_grad()
        sat_model.eval()
