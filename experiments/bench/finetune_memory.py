"""Memory of fine-tuning the SA2 DiT: full fine-tuning vs LoRA (issue 12 §6).

1. **Counted** (meta device, nothing allocated): parameters of ``conf/dit/sa2.yaml`` (Stable Audio
   Open's DiT) and of the adapter (``conf/adapter/<kind>.yaml``, rank overridable), and the static
   memory of each recipe: weights, gradients, optimiser states (AdamW: 2 fp32 moments; 8-bit AdamW
   from bitsandbytes: 2 uint8 moments + per-block scales) and the EMA copy.
2. **Measured**: the real SA2-size DiT with bf16 base weights, a float32 LoRA, gradient
   checkpointing, batch 1 and 130 T5/timing tokens; one forward + backward + AdamW step at a few
   reduced contexts. Every tensor allocated during the step is tracked (a ``TorchDispatchMode``
   counting live storages), so the peak is the allocator-independent live-tensor peak on top of the
   weights.
3. **Projected**: peak = weights + optimiser/EMA state + (fitted intercept + slope × latent frames),
   from a least-squares line through the measured activation peaks (memory-efficient attention, as
   SDPA's flash kernels on CPU and GPU, keeps activations linear in the context), at 47 s (SAO's
   window) and 285 s (SA2's).

Usage::

    python experiments/bench/finetune_memory.py                       # counts + measured at 8/16/32 frames
    python experiments/bench/finetune_memory.py --contexts 32 --kind dora --rank 16
    python experiments/bench/finetune_memory.py --count-only
    python experiments/bench/finetune_memory.py --device cuda --contexts 256 1012   # on a GPU: 47 s measured
"""

from __future__ import annotations

import argparse
import time
import weakref

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from musicdiff.adapters import AdapterSpec, adapter_parameters, attach_adapter, freeze_base
from musicdiff.config.paths import config_dir  # also registers the root schemas

GIB = 1024**3
TOKENS = 130  # T5 prompt (128) + seconds_start + seconds_total


def sa2_config(kind: str, rank: int | None):
    """The ``dit=sa2`` node with SAO's conditioning widths, and the adapter spec."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("train", ["dit=sa2", "conditioner=t5_timing", "autoencoder=oobleck_sa2", f"adapter={kind}"])
    GlobalHydra.instance().clear()
    spec = instantiate(cfg.adapter)
    if rank is not None:
        spec = AdapterSpec(spec.kind, rank, spec.alpha * rank / spec.rank, spec.dropout, spec.targets, spec.t_interval)
    return cfg, spec


class LivePeak(TorchDispatchMode):
    """Peak bytes of tensor storages allocated inside the mode and still alive (freed ones subtracted).

    Storages of ``existing`` tensors (weights, inputs) are not counted, nor are views of them.
    """

    def __init__(self, existing: list[torch.Tensor] = ()) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, weakref.ref] = {}
        self._known = {t.untyped_storage().data_ptr() for t in existing}  # weights: views of them are free

    def _free(self, key: int, n: int) -> None:
        if self._refs.pop(key, None) is not None:
            self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                st = t.untyped_storage()
                key, n = st.data_ptr(), st.nbytes()
                if n and key not in self._refs and key not in self._known:
                    self._refs[key] = weakref.ref(st, lambda _, k=key, n=n: self._free(k, n))
                    self.live += n
                    self.peak = max(self.peak, self.live)
        return out


def counts(cfg, spec: AdapterSpec) -> tuple[int, int]:
    """(DiT parameters, adapter parameters), counted on the meta device."""
    with torch.device("meta"):
        dit = instantiate(cfg.dit)
    total = sum(p.numel() for p in dit.parameters())
    if spec.kind == "lora_xs":  # its SVD cannot run on meta tensors: r×r per layer
        from musicdiff.adapters.stack import target_layers

        return total, len(target_layers(dit, spec)) * spec.rank**2
    with torch.device("meta"):
        attach_adapter(dit, spec)
    return total, sum(p.numel() for p in adapter_parameters(dit))


def static_table(p: int, a: int) -> dict[str, dict[str, float]]:
    """Bytes per recipe: weights, gradients, optimiser states, EMA (GiB)."""
    adam8 = 2 + 2 * 4 / 256  # two uint8 moments + a float32 absmax per 256-value block each
    rows = {
        "full FT, fp32 weights, AdamW, EMA": (4 * p, 4 * p, 8 * p, 4 * p),
        "full FT, fp32 weights, 8-bit AdamW, EMA": (4 * p, 4 * p, adam8 * p, 4 * p),
        "full FT, bf16 weights + fp32 master, AdamW, EMA": (6 * p, 2 * p, 8 * p, 4 * p),
        "LoRA, bf16 base, AdamW, adapter EMA": (2 * p + 4 * a, 4 * a, 8 * a, 4 * a),
        "LoRA, bf16 base, 8-bit AdamW, adapter EMA": (2 * p + 4 * a, 4 * a, adam8 * a, 4 * a),
    }
    return {k: {"weights": w / GIB, "grads": g / GIB, "optim": o / GIB, "ema": e / GIB, "total": (w + g + o + e) / GIB}
            for k, (w, g, o, e) in rows.items()}


def measure(cfg, spec: AdapterSpec, frames: list[int], eight_bit: bool,
            device: str = "cpu") -> list[tuple[int, float, float]]:
    """``(frames, activation peak GiB, step seconds)`` of one LoRA step of the bf16 SA2 DiT per context."""
    torch.manual_seed(0)
    with torch.device("meta"):
        dit = instantiate(cfg.dit, gradient_checkpointing=True)
    dit = dit.to_empty(device=device).to(torch.bfloat16)
    with torch.no_grad():
        for p in dit.parameters():
            p.normal_(0.0, 0.02)
    attach_adapter(dit, spec)
    freeze_base(dit)
    dit.train()
    params = adapter_parameters(dit)
    if eight_bit:
        import bitsandbytes as bnb

        opt = bnb.optim.AdamW8bit(params, lr=1e-4)
    else:
        opt = torch.optim.AdamW(params, lr=1e-4)
    out = []
    for n in frames:
        x = torch.randn(1, dit.io_channels, n, device=device)
        cond = torch.randn(1, TOKENS, dit.cond_token_dim, device=device)
        glob = torch.randn(1, dit.global_cond_dim, device=device)
        t0 = time.process_time()
        with LivePeak([*dit.parameters(), *dit.buffers(), x, cond, glob]) as tracker:
            v = dit(x, torch.rand(1, device=device), cond, None, glob)
            v.float().square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            del v
        out.append((n, tracker.peak / GIB, time.process_time() - t0))
        print(f"  measured: {n:5d} frames  activation+state peak {tracker.peak / GIB:7.3f} GiB  "
              f"({out[-1][2]:.0f} s CPU)", flush=True)
    return out


def fit_line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``y = a + b·x`` (a single point: through the origin)."""
    if len(points) == 1:
        return 0.0, points[0][1] / points[0][0]
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    b = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return my - b * mx, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", default="lora", choices=["lora", "dora", "lora_xs"], help="adapter config option")
    ap.add_argument("--rank", type=int, default=None, help="adapter rank (default: the config's)")
    ap.add_argument("--contexts", type=int, nargs="+", default=[8, 16, 32], help="measured latent frames")
    ap.add_argument("--eight-bit", action="store_true", help="measure with bitsandbytes' 8-bit AdamW")
    ap.add_argument("--count-only", action="store_true", help="skip the measured step")
    ap.add_argument("--device", default="cpu", help="device of the measured step (cpu | cuda)")
    ap.add_argument("--target-gib", type=float, default=24.0, help="GPU memory to compare the projection with")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))

    cfg, spec = sa2_config(args.kind, args.rank)
    rate = cfg.autoencoder.sample_rate / cfg.autoencoder.downsampling_ratio
    p, a = counts(cfg, spec)
    print(f"SA2 DiT (conf/dit/sa2.yaml): {p / 1e6:.1f} M parameters; {spec.kind} rank {spec.rank} on "
          f"{spec.targets}: {a / 1e6:.2f} M parameters ({100 * a / p:.2f} %)")
    table = static_table(p, a)
    print(f"\n{'recipe':52s} {'weights':>8s} {'grads':>8s} {'optim':>8s} {'ema':>8s} {'total GiB':>10s}")
    for name, row in table.items():
        print(f"{name:52s} {row['weights']:8.2f} {row['grads']:8.2f} {row['optim']:8.2f} {row['ema']:8.2f} "
              f"{row['total']:10.2f}")
    if args.count_only:
        return
    print(f"\nMeasured LoRA step (bf16 base, fp32 {spec.kind}, gradient checkpointing, batch 1, "
          f"{'8-bit ' if args.eight_bit else ''}AdamW) on {args.device}:")
    measured = measure(cfg, spec, args.contexts, args.eight_bit, args.device)
    intercept, slope = fit_line([(n, g) for n, g, _ in measured])
    lora = table["LoRA, bf16 base, 8-bit AdamW, adapter EMA" if args.eight_bit else "LoRA, bf16 base, AdamW, adapter EMA"]
    base = lora["weights"] + lora["ema"]  # the step's tracked peak already holds grads and optimiser states
    print(f"  fit: activation+state peak = {intercept:.3f} GiB + {slope * 1024:.3f} MiB per latent frame")
    if slope <= 0:
        print("  (no slope: at these contexts the peak is the optimiser step, not the activations; measure longer ones)")
    full = table["full FT, fp32 weights, AdamW, EMA"]["total"]
    fits = f"LoRA < {args.target_gib:g} GiB"
    print(f"\n{'context':>10s} {'frames':>7s} {'LoRA peak GiB':>14s} {'full FT peak GiB':>17s} {fits:>15s}")
    for seconds in (47.0, 285.0):
        n = round(seconds * rate)
        act = intercept + slope * n
        lora_peak = base + act
        print(f"{seconds:9.0f}s {n:7d} {lora_peak:14.2f} {full + act:17.2f} {str(lora_peak < args.target_gib):>15s}")
    print("(full FT peak: its counted static memory + the same activations; not measured here: "
          "~20 GiB before the first activation)")


if __name__ == "__main__":
    main()
