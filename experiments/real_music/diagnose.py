"""Generator-only training trace of an autoencoder recipe on an audio folder (issue 14 diagnosis).

Before ``adversarial_warmup_steps`` the discriminator does not influence the generator, so the
divergence seen at ~150 steps of ``experiment=tiny_autoencoder`` can be traced without it, at a
third of the cost. Every ``--every`` steps one JSON line goes to ``--out`` with the loss terms, the
KL, the latent RMS, the posterior std, the unclipped gradient norm, the largest SnakeBeta
1/beta in the encoder and decoder and the decoded/real RMS ratio.

    python experiments/real_music/diagnose.py --out trace.jsonl --steps 200 -- \
        experiment=tiny_autoencoder dataset=audio_dir dataset.root=outputs/data/real_music
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import musicdiff.config  # noqa: F401  (registers the schemas)
from musicdiff.data.collate import collate
from musicdiff.training.data_order import ResumableShardedSampler

CONF = Path(__file__).resolve().parents[2] / "conf"


def snake_extremes(module: torch.nn.Module) -> float:
    """Largest 1/beta over the SnakeBeta activations of ``module`` (the activation's gain on sin^2)."""
    worst = 0.0
    for m in module.modules():
        if type(m).__name__ == "SnakeBeta":
            beta = m.beta.detach().exp() if getattr(m, "logscale", True) else m.beta.detach()
            worst = max(worst, float((1.0 / (beta + 1e-9)).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["logger=none", "task.discriminator=null", *args.overrides])
    torch.manual_seed(int(cfg.seed))
    dataset = instantiate(cfg.dataset)
    task = instantiate(cfg.task)
    opts = task.configure_optimizers()
    bs = int(cfg.trainer.batch_size)
    stats: dict[str, float] = {}

    class Ctx:
        def backward_step(self, name, loss):
            opt, sched = opts[name]
            if not torch.isfinite(loss):
                opt.zero_grad()
                return False
            loss.backward()
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, args.grad_clip or float("inf")))
            opt.step()
            if sched is not None:
                sched.step()
            opt.zero_grad()
            return True

    ctx, step, epoch, t0 = Ctx(), 0, 0, time.time()
    with open(args.out, "w") as fh:
        while step < args.steps:
            sampler = ResumableShardedSampler(len(dataset), bs, 0, 1, int(cfg.seed))
            sampler.set_position(epoch, 0)
            dataset.set_epoch(epoch)
            idx = list(sampler)
            for i in range(0, len(idx) - bs + 1, bs):
                batch = collate([dataset[j] for j in idx[i:i + bs]])
                torch.manual_seed(step)
                m = task.training_step(batch, step, ctx)
                step += 1
                if step % args.every == 0 or step == 1:
                    rec = {"step": step, **{k: round(v, 5) for k, v in m.items()}, "grad_norm": stats.get("grad_norm"),
                           "lr": opts["generator"][0].param_groups[0]["lr"],
                           "snake_inv_beta_enc": snake_extremes(task.autoencoder.encoder),
                           "snake_inv_beta_dec": snake_extremes(task.autoencoder.decoder), "wall": time.time() - t0}
                    fh.write(json.dumps(rec) + "\n")
                    fh.flush()
                if step >= args.steps:
                    break
            epoch += 1


if __name__ == "__main__":
    main()
