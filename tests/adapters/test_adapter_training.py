"""Adapter fine-tuning in the diffusion task (issue 12 §3-4): `adapter=lora init_from=<export>` trains
only the adapter (base bit-identical), the EMA and the checkpoints hold the adapter alone, the export is
`adapter.safetensors` that the loading layer stacks on the base to reproduce the task's EMA model, the
diagnostics reach the run logger, and a checkpoint refuses to resume onto another base."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file

from musicdiff.adapters import (
    AdapterBaseMismatchError,
    AdapterEMA,
    base_state_dict,
    is_adapter_key,
    merge_adapters,
    read_adapter,
)
from musicdiff.cli.train import pretrained_parts
from musicdiff.pretrained import load_pretrained
from musicdiff.training import checkpoint as ckpt
from tests.adapters.conftest import TINY
from tests.conftest import compose_root


class RecordingLogger:
    """A run logger that keeps what it is given."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.audio: list[str] = []

    def log_metrics(self, metrics, step):
        self.metrics.update(metrics)

    def log_audio(self, key, audio, sample_rate, step):
        self.audio.append(key)

    def __getattr__(self, name):  # params, artifacts ...: ignored
        return lambda *a, **k: None


def _adapter_task(base_export, tmp_path, *extra, adapter=("adapter=lora", "adapter.rank=4")):
    cfg = compose_root("train", [*TINY, *adapter, f"init_from={base_export}",
                                 f"paths.log_dir={tmp_path / 'outputs'}", f"paths.output_dir={tmp_path / 'run'}",
                                 *extra])
    parts = pretrained_parts(cfg)
    return cfg, instantiate(cfg.task, **parts)


def test_lora_run_trains_only_the_adapter_and_exports_it(base_export, tmp_path):
    cfg, task = _adapter_task(base_export, tmp_path, "trainer.max_steps=4", "trainer.demo_every=4")
    base_before = {k: v.clone() for k, v in base_state_dict(task.dit).items()}
    cond_before = {k: v.clone() for k, v in task.conditioner.state_dict().items()}
    trainable = {id(p) for p in task.trainable_parameters()}
    assert trainable == {id(p) for n, p in task.dit.named_parameters() if is_adapter_key(n)}
    assert isinstance(task.ema, AdapterEMA)
    assert sum(v.numel() for v in task.ema.state_dict().values()) < 0.3 * sum(v.numel() for v in base_before.values())

    logger, run = RecordingLogger(), tmp_path / "run"
    metrics = instantiate(cfg.trainer).fit(task, instantiate(cfg.dataset), logger, run, cfg, "h", seed=0)
    assert metrics["skipped_nonfinite"] == 0 and metrics["step"] == 4

    # base DiT and conditioners bit-identical; the adapter moved
    assert all(torch.equal(base_state_dict(task.dit)[k], v) for k, v in base_before.items())
    assert all(torch.equal(task.conditioner.state_dict()[k], v) for k, v in cond_before.items())
    # diagnostics through the demo's logger: weight change and the fixed-seed A/B
    assert logger.audio == ["demo/0"]
    assert metrics_ok(logger.metrics)
    # checkpoints: adapter, its EMA, the frozen conditioner and the base hash; not the base DiT
    weights = load_file(str(ckpt.latest_checkpoint(run / "checkpoints") / ckpt.WEIGHTS))
    roots = {k.split(".")[0] for k in weights}
    assert roots == {"adapter", "ema", "conditioner", "adapter_base"}, roots
    # export: the adapter alone, stacking onto the base = the task's EMA model; merging matches
    files = sorted(p.name for p in (run / "export").iterdir())
    assert files == ["adapter.safetensors"], files
    info, tensors = read_adapter(run / "export" / "adapter.safetensors")
    assert info["spec"].kind == "lora" and info["spec"].rank == 4 and len(tensors) == 2 * len(info["layers"])
    p = load_pretrained(base_export, adapters=[f"{run / 'export' / 'adapter.safetensors'}:1.0"])
    x, t = torch.randn(2, task.dit.io_channels, 16), torch.tensor([0.3, 0.8])
    meta = [{"prompt": "saw playing E4", "seconds_start": 0.0, "seconds_total": 1.0}] * 2
    cond = task.conditioner(meta, torch.device("cpu"))
    args = (cond["cross_attn_cond"], cond.get("cross_attn_mask"), cond.get("global_cond"))
    with torch.no_grad():
        want = task.eval().ema.module(x, t, *args)
        got = p.dit(x, t, *args)
        assert (got - want).abs().max() < 1e-6
        assert (merge_adapters(p.dit)(x, t, *args) - want).abs().max() < 1e-5
        plain = load_pretrained(base_export).dit(x, t, *args)
        assert (got - plain).abs().max() > 1e-4  # the adapter does something
        # `python -m musicdiff.adapters.merge` writes a plain export equal to the adapted model
        from musicdiff.adapters.merge import main as merge_main

        merged = merge_main([f"base={base_export}", f"adapters={run / 'export' / 'adapter.safetensors'}:1.0",
                             f"out={tmp_path / 'merged'}"])
        plain_merged = load_pretrained(merged)
        assert plain_merged.kind == "export" and not hasattr(plain_merged.dit, "adapters")
        assert (plain_merged.dit(x, t, *args) - want).abs().max() < 1e-5

    # resuming this checkpoint onto a different base is refused, naming both hashes
    cfg2 = compose_root("train", [*TINY, "adapter=lora", "adapter.rank=4", "seed=1"])
    torch.manual_seed(1)
    other = instantiate(cfg2.task)
    with pytest.raises(AdapterBaseMismatchError, match="weight hash .* hashes to"):
        ckpt.load_checkpoint(ckpt.latest_checkpoint(run / "checkpoints"), other.checkpoint_modules())


def metrics_ok(m: dict[str, float]) -> bool:
    """Per-layer ‖ΔW‖/‖W‖ for every adapted layer, their mean, and the A/B distances, all positive."""
    layers = [k for k in m if k.startswith("adapter/dw_rel/")]
    assert len(layers) == 2 * 7, layers  # tiny DiT: 2 blocks × 7 linear layers
    assert m["adapter/dw_rel_mean"] > 0 and m["adapter/dw_rel_max"] >= m["adapter/dw_rel_mean"]
    assert m["adapter/ab_latent_rel_l2"] > 0 and m["adapter/ab_mel_l1"] > 0
    return True


@pytest.mark.parametrize("option", ["none", "dora", "lora_xs"])
def test_every_adapter_option_builds_and_steps(option, base_export, tmp_path):
    """Each conf/adapter option instantiates from the config tree and takes an optimiser step."""
    cfg, task = _adapter_task(base_export, tmp_path, adapter=[f"adapter={option}"])
    opt = torch.optim.AdamW(task.trainable_parameters(), lr=1e-2)
    before = {k: v.clone() for k, v in base_state_dict(task.dit).items()}
    ds = instantiate(cfg.dataset)
    from musicdiff.data.collate import collate

    batch = collate([ds[0], ds[1]])

    class Ctx:
        def backward_step(self, name, loss):
            loss.backward()
            opt.step()

    task.train().training_step(batch, 0, Ctx())
    changed = [k for k, v in base_state_dict(task.dit).items() if not torch.equal(v, before[k])]
    if option == "none":
        assert changed and task.adapter is None  # the whole DiT trains
    else:
        assert not changed and all(p.grad is not None for p in task.trainable_parameters())


def test_lora_with_8bit_adamw_checkpoints_and_resumes(base_export, tmp_path):
    """optim=adamw_8bit (bitsandbytes, CPU): uint8 Adam moments for the adapter, saved and resumed."""
    from musicdiff.cli.train import train

    common = [*TINY, "adapter=lora", f"init_from={base_export}", "optim=adamw_8bit", "optim.min_8bit_size=1",
              "task.demo_prompts=[]", f"paths.log_dir={tmp_path / 'outputs'}", f"paths.output_dir={tmp_path / 'run'}"]
    train(compose_root("train", [*common, "trainer.max_steps=2"]))
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints"))["optimizers"]["dit"]
    quant = [s.get("__bnb_optimizer_quant_state__", s) for s in state["state"].values()]  # bitsandbytes' layout
    dtypes = {v.dtype for s in quant for k, v in s.items() if k in ("state1", "state2")}
    assert dtypes == {torch.uint8}
    assert train(compose_root("train", [*common, "trainer.max_steps=3"]))["step"] == 3
    assert (tmp_path / "run" / "export" / "adapter.safetensors").is_file()
