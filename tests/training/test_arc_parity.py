"""The ARC losses against stable-audio-tools 0.0.19 ``training/arc.py`` on random weights.

SAT's ``ARCTrainingWrapper.training_step`` runs one generator step (global step 0) and one
discriminator step (global step 1, with the contrastive prompt loss) on a reduced Stable Audio Open
Small; musicdiff's :class:`~musicdiff.training.tasks.arc.ARCTask` gets the converted weights (the
discriminator head copied from SAT's), the same latents, times and noises, and must give the same
loss values and gradients.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

LATENTS = 64  # the conv head needs >= 64 positions (4 stride-2 convs, then a width-4 conv)
PROMPTS = ["warm arpeggios on house beats", "lofi drums", "orchestral film score"]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from musicdiff.reference.sat_config import sat_to_musicdiff
    from musicdiff.reference.sat_presets import stable_audio_open_small_config
    from musicdiff.reference.sat_reference import build_sat_model, load_sat_training
    from musicdiff.reference.sat_weights import sat_to_musicdiff as convert_weights
    from tests.helpers.stable_audio_tools import randomize_
    from tests.helpers.tiny_text_models import make_tiny_t5

    t5 = make_tiny_t5(tmp_path_factory.mktemp("t5_arc"), d_model=768)
    config = stable_audio_open_small_config(ae_channels=4, latent_dim=16, embed_dim=128, depth=2, num_heads=2,
                                            cond_dim=64, sample_size=LATENTS * 2048,
                                            diffusion_objective="rectified_flow")
    torch.manual_seed(0)
    model = build_sat_model(config, t5_path=t5)
    randomize_(model, seed=2)
    discriminator = build_sat_model(config, t5_path=t5)  # SAT's discriminator: a copy of the pre-trained model
    discriminator.load_state_dict(model.state_dict())
    groups = OmegaConf.create(sat_to_musicdiff(config, t5_path=t5))
    tensors = convert_weights(model.state_dict())
    ours = {}
    for name in ("dit", "conditioner"):
        ours[name] = instantiate(groups[name])
        ours[name].load_state_dict(tensors[name], strict=True)
    sat = load_sat_training("training.arc")  # after the T5 encoders are built (its import-only placeholders)
    wrapper = sat.training.arc.ARCTrainingWrapper(
        model, discriminator, arc_config={"discriminator": {"dit_hidden_layer": 0, "type": "conv", "contrastive": True,
                                                            "weights": {"contrastive": 0.5}}},
        optimizer_configs={"diffusion": {}, "discriminator": {}}, use_ema=False, pre_encoded=True)
    randomize_(wrapper.discriminator_head, seed=3)
    return wrapper, ours


def _sat_step(wrapper, monkeypatch, step, x, meta, times, noises):
    """SAT's training_step at ``global_step=step`` with the given uniform draws and noises."""
    times, noises = list(times), list(noises)
    wrapper.rng = SimpleNamespace(draw=lambda n: times.pop(0).clone()[:, None])
    opt = SimpleNamespace(zero_grad=lambda: None, step=lambda: None, param_groups=[{"lr": 1e-4}])
    monkeypatch.setattr(wrapper, "optimizers", lambda: (opt, opt))
    monkeypatch.setattr(wrapper, "lr_schedulers", lambda: None)
    monkeypatch.setattr(wrapper, "manual_backward", lambda loss: loss.backward())
    monkeypatch.setattr(wrapper, "log_dict", lambda *a, **k: None)
    monkeypatch.setattr(type(wrapper), "global_step", property(lambda self: step), raising=False)
    real_randn_like = torch.randn_like
    with monkeypatch.context() as m:
        m.setattr(torch, "randn_like", lambda ref, *a, **k: noises.pop(0).clone() if ref.shape == x.shape
                  else real_randn_like(ref, *a, **k))
        return wrapper.training_step((x.clone(), meta), 0)


def _task(ours, wrapper):
    from musicdiff.diffusion import RectifiedFlowLoss
    from musicdiff.models.arc_discriminator import ARCDiscriminator
    from musicdiff.training.tasks.arc import ARCTask

    task = ARCTask(copy.deepcopy(ours["dit"]), ours["conditioner"], RectifiedFlowLoss(),
                   optimizer=lambda p: torch.optim.SGD(p, lr=0.0),
                   discriminator=lambda dit: ARCDiscriminator(dit, layer=0),
                   optimizer_discriminator=lambda p: torch.optim.SGD(p, lr=0.0), contrastive_weight=0.5,
                   freeze=["conditioner"])
    task.discriminator.head.load_state_dict(wrapper.discriminator_head.state_dict(), strict=True)
    return task.train()


def _close(ours, ref, what):
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6 + 1e-5 * float(ref.abs().max()),
                               msg=lambda m: f"{what}: {m}")


def test_generator_and_discriminator_losses_match_sat(pair, monkeypatch):
    wrapper, ours = pair
    task = _task(ours, wrapper)
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3, 16, LATENTS, generator=gen)
    t, s = torch.rand(3, generator=gen), torch.rand(3, generator=gen)
    noise, renoise = torch.randn(x.shape, generator=gen), torch.randn(x.shape, generator=gen)
    metadata = [{"prompt": p, "seconds_total": 10.0 + i} for i, p in enumerate(PROMPTS)]

    def sat_meta():
        return [{**md, "padding_mask": [torch.ones(LATENTS, dtype=torch.bool)]} for md in metadata]

    wrapper.train()
    # generator step: relativistic loss softplus(D(real) - D(fake)); gradients into the generator
    ref = _sat_step(wrapper, monkeypatch, 0, x, sat_meta(), [t, s], [noise, renoise])  # backward inside
    cond = task.conditioner(metadata, "cpu")
    loss, _ = task.generator_loss(x, cond, t, noise, s, renoise)
    loss.backward()
    _close(loss.detach(), ref.detach(), "generator loss")
    sat_dit = dict(wrapper.diffusion.model.model.named_parameters())
    for key, p in task.dit.named_parameters():
        _close(p.grad, sat_dit[key].grad, f"generator grad {key}")

    # discriminator step: relativistic + contrastive (rotated prompts) losses
    wrapper.zero_grad()
    task.zero_grad()
    meta = sat_meta()
    ref = _sat_step(wrapper, monkeypatch, 1, x, meta, [t, s], [noise, renoise])
    rolled = [{k: v for k, v in md.items() if k != "padding_mask"} for md in meta]  # SAT rotated them in place
    assert [md["prompt"] for md in rolled] != PROMPTS
    with torch.no_grad():
        fake = task.clean_estimate((1 - t[:, None, None]) * x + t[:, None, None] * noise, t, cond)
    loss, info = task.discriminator_loss(x, fake, cond, task.conditioner(rolled, "cpu"), s, renoise)
    loss.backward()
    _close(loss.detach(), ref.detach(), "discriminator loss")
    assert float(info["contrastive"]) > 0
    for key, p in task.discriminator.head.named_parameters():
        _close(p.grad, dict(wrapper.discriminator_head.named_parameters())[key].grad, f"head grad {key}")
    sat_trunk = dict(wrapper.discriminator.model.model.named_parameters())
    checked = 0
    for key, p in task.discriminator.trunk.named_parameters():
        if p.grad is not None and float(sat_trunk[key].grad.abs().max()) > 0:
            _close(p.grad, sat_trunk[key].grad, f"discriminator grad {key}")
            checked += 1
    assert checked > 10


def test_roll_prompts_gives_every_item_another_prompt():
    from musicdiff.losses.arc import roll_prompts

    meta = [{"prompt": p, "seconds_total": i} for i, p in enumerate(PROMPTS)]
    rolled = roll_prompts(meta)
    assert [m["prompt"] for m in rolled] == PROMPTS[1:] + PROMPTS[:1]
    assert [m["seconds_total"] for m in rolled] == [0, 1, 2] and meta[0]["prompt"] == PROMPTS[0]
    with pytest.raises(ValueError, match="at least 2"):
        roll_prompts(meta[:1])
