"""``musicdiff-train task=arc init_from=<export>``: the generator starts at the base model, the
discriminator is built from it, both train in turn, and the export records the objective the
generator needs (``rf_denoiser`` for a rectified-flow base, ``v`` for a v base) so that
``musicdiff-generate sampler=flow_pingpong`` samples it without CFG."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from musicdiff.pretrained import load_pretrained, write_export
from tests.conftest import compose_root

PARTS = ("autoencoder", "dit", "conditioner")


def _base(root, diffusion):
    """A tiny 'pretrained' export with objective ``diffusion`` (seeded random weights)."""
    cfg = compose_root("train", ["experiment=tiny", f"diffusion={diffusion}", "logger=none",
                                 f"paths.output_dir={root / 'x'}"])
    torch.manual_seed(5)
    modules = {g: instantiate(cfg[g]).eval() for g in PARTS}
    return root, write_export(root / "base", modules, cfg), modules, diffusion


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return _base(tmp_path_factory.mktemp("arc_rf"), "rectified_flow")


def test_arc_adopts_the_objective_of_a_v_base(tmp_path):
    from musicdiff.cli.train import pretrained_parts
    from musicdiff.diffusion import objective_of

    _, export, _, _ = _base(tmp_path, "v_objective")
    cfg = compose_root("train", ["task=arc", f"init_from={export}", "diffusion=rectified_flow", "logger=none"])
    parts = pretrained_parts(cfg)
    assert sorted(parts) == sorted(PARTS) and objective_of(cfg.diffusion) == "v"
    task = instantiate(cfg.task, **parts).train()
    assert task.objective == "v" and task.discriminator.trunk is not task.dit
    # one generator and one discriminator step on the v parametrisation (the trunk sees VP samples)
    stepped = []
    ctx = type("Ctx", (), {"backward_step": lambda self, name, loss: stepped.append(name) or loss.backward()})()
    batch = {"latents": torch.randn(2, cfg.dit.io_channels, 80),
             "metadata": [{"prompt": "square playing C4", "seconds_start": 0.0, "seconds_total": 1.0},
                          {"prompt": "saw playing G4", "seconds_start": 0.0, "seconds_total": 1.0}]}
    gen_metrics, dis_metrics = task.training_step(batch, 0, ctx), task.training_step(batch, 1, ctx)
    assert stepped == ["dit", "discriminator"] and "contrastive_loss" in dis_metrics and "gen_loss" in gen_metrics
    assert any(p.grad is not None for p in task.discriminator.parameters())
    assert all(p.grad is None for p in task.conditioner.parameters())  # frozen


def test_arc_post_training_runs_and_exports_a_few_step_model(base):
    from musicdiff.cli.generate import generate
    from musicdiff.cli.train import train
    from musicdiff.diffusion import objective_of
    from musicdiff.models.arc_discriminator import ARCDiscriminator

    root, export, modules, objective = base
    run = root / "arc"
    cfg = compose_root("train", [
        "task=arc", f"init_from={export}", "logger=none", "dataset.num_items=8", "trainer.batch_size=2",
        "dataset.window_seconds=0.5", "task.demo_prompts=[]", "trainer.progress=false", "trainer.max_steps=2",
        "optim.lr=1e-3", "task.optimizer_discriminator.lr=1e-3", "sampler=flow_pingpong",
        f"paths.log_dir={root / 'outputs'}", f"paths.output_dir={run}"])
    assert objective_of(cfg.diffusion) == "v"  # the run's default, replaced by the base's objective
    metrics = train(cfg)
    assert metrics["skipped_nonfinite"] == 0 and "gen_loss" in metrics and "contrastive_loss" in metrics
    want = "rf_denoiser"
    assert objective_of(cfg.diffusion) == want
    pre = load_pretrained(run / "export")
    assert objective_of(pre.config.diffusion) == want
    trained = load_file(str(run / "export" / "dit.safetensors"))
    base_dit = modules["dit"].state_dict()
    assert any(not torch.equal(trained[k], base_dit[k]) for k in base_dit)  # the generator moved
    assert all(torch.equal(load_file(str(run / "export" / "conditioner.safetensors"))[k], v)
               for k, v in modules["conditioner"].state_dict().items())  # frozen

    wav = generate(compose_root("generate", [
        f"checkpoint={run / 'export'}", "prompt=square playing C4", "duration=0.5", "sampler=flow_pingpong",
        "sampler.steps=4", "logger=none", f"paths.output_dir={root / 'gen'}", f"paths.log_dir={root / 'outputs'}"]))
    assert len(wav) == 1 and wav[0].is_file()

    # the discriminator is the base DiT's first blocks (copied) plus the head
    disc = ARCDiscriminator(modules["dit"], layer=0)
    assert len(disc.trunk.transformer.layers) == 1
    ours, theirs = disc.trunk.transformer.layers[0].state_dict(), modules["dit"].transformer.layers[0].state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert ours[next(iter(ours))].data_ptr() != theirs[next(iter(theirs))].data_ptr()


def test_discriminator_refuses_bad_settings():
    cfg = compose_root("train", ["experiment=tiny", "logger=none"])
    dit = instantiate(cfg.dit)
    from musicdiff.models.arc_discriminator import ARCDiscriminator

    with pytest.raises(ValueError, match="not a block"):
        ARCDiscriminator(dit, layer=5)
    with pytest.raises(ValueError, match="num_groups"):
        ARCDiscriminator(dit, layer=0, num_groups=48)
    disc = ARCDiscriminator(dit, layer=1)
    with pytest.raises(ValueError, match=">= 64 positions"):
        disc(torch.randn(1, dit.io_channels, 10), torch.tensor([0.5]))
