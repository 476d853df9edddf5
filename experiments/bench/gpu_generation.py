"""Generation speed at Stable Audio 2 size: 100-step DPM-Solver++ with CFG against 8-step ARC-style sampling.

SA2-size DiT (1536 wide, 24 blocks, 24 heads; ``conf/dit/sa2.yaml``) and Oobleck VAE
(``conf/autoencoder/oobleck_sa2.yaml``) with random weights (speed does not depend on them), a
4 min 45 s window (6144 latents, SA2 §4), batch 1, random conditioning tokens in place of T5
(768-wide, 128 prompt + 2 timing tokens). Two workloads:

* ``dpmpp_100_cfg``: DPM-Solver++(3M) SDE, 100 steps, CFG 7 (a batch-2 DiT forward per step;
  Stable Audio Open's sampler);
* ``arc_8``: ping-pong flow sampling, 8 steps, no CFG (an ARC post-trained model, SAO Small).

Each runs in bf16 with PyTorch's SDPA attention, eager and (``--compile``) through
``torch.compile``, after a warm-up. Printed per row: seconds per generation (sampling + VAE
decode), DiT forwards per second, VAE decode seconds, peak memory, and model FLOP utilisation
(DiT FLOPs counted analytically: ``2·params·tokens`` for the linear layers plus ``4·N·M·width``
per attention, over the time of the sampling loop) against the GPU's dense bf16 peak. Anchors: SA2
generates 4m45s in 13 s on an A100 (SA2 §5); Stable Audio 3 medium 380 s in 1.31 s on an H200.

    python experiments/bench/gpu_generation.py --device cuda            # eager and compiled, H100/H200
    python experiments/bench/gpu_generation.py --device cpu --small     # smoke run (tiny sizes)
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from musicdiff.models.inference import fast_inference
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"
# Dense bf16 tensor-core peaks (FLOP/s) by device-name fragment; --peak-tflops overrides.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12}


def build(args: argparse.Namespace, device: torch.device, dtype: torch.dtype):
    """The DiT and the autoencoder (random weights) in ``dtype`` on ``device``."""
    if args.small:
        ae = OmegaConf.load(CONF / "autoencoder" / "tiny.yaml")
        dit = OmegaConf.load(CONF / "dit" / "tiny.yaml")
    else:
        ae = OmegaConf.load(CONF / "autoencoder" / "oobleck_sa2.yaml")
        dit = OmegaConf.load(CONF / "dit" / "sa2.yaml")
    root = OmegaConf.create({"autoencoder": ae, "dit": dit,
                             "conditioner": {"cond_dim": args.cond_dim, "global_cond_dim": 2 * args.cond_dim}})
    root.dit.gradient_checkpointing = False
    root.dit.use_cross_attn_mask = False
    autoencoder = instantiate(root.autoencoder).to(device).eval()
    net = instantiate(root.dit).to(device=device, dtype=dtype).eval()
    return net, autoencoder


def dit_flops(net: torch.nn.Module, tokens: int, cond_tokens: int) -> float:
    """FLOPs of one DiT forward on one item: linear layers ``2·params·tokens`` + attention matmuls."""
    width, depth = net.width, len(net.transformer.layers)
    params = sum(p.numel() for n, p in net.named_parameters() if "transformer.layers" in n)
    linear = 2.0 * params * tokens  # cross-attention K/V projections counted on query tokens: an upper bound
    attention = depth * 4.0 * width * (tokens * tokens + tokens * cond_tokens)
    return linear + attention


def peak_flops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def run_case(name: str, spec, denoiser, net, autoencoder, args, device, dtype, cond, uncond) -> dict:
    """Warm up once, then time one generation (sampling + decode)."""
    calls = [0]

    def counted(x, s, **kw):
        calls[0] += 1
        return guided(x, s, **kw)

    guided = spec.guided(denoiser)
    sigmas = spec.sigmas(device, length=args.latents)
    x = torch.randn(1, net.io_channels, args.latents, device=device) * sigmas[0]
    extra = {"cond": cond, "uncond": uncond}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with (torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32),
          fast_inference(net, autoencoder)):  # skips a compiled net (Inductor fuses it)
        spec.run(counted, x, extra, sigmas=sigmas[-3:], disable=True, seed=0)  # warm-up (compiles)
        autoencoder.decode(x[:, :, : min(args.latents, 64)].float())
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        calls[0] = 0
        sync()
        t0 = time.perf_counter()
        latents = spec.run(counted, x, extra, sigmas=sigmas, disable=True, seed=0)
        sync()
        t1 = time.perf_counter()
        audio = autoencoder.decode(latents.float())
        sync()
        t2 = time.perf_counter()
    assert torch.isfinite(audio).all(), f"{name}: non-finite audio"
    batch = 2 if spec.cfg_scale != 1.0 else 1
    forwards = calls[0] * batch  # items through the DiT
    flops = forwards * dit_flops(net, args.latents + 1, args.cond_tokens)
    peak = peak_flops(device, args.peak_tflops)
    mem = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    return {"case": name, "steps": len(sigmas) - 1, "evals": calls[0], "total_s": t2 - t0, "sample_s": t1 - t0,
            "dit_steps_per_s": calls[0] / (t1 - t0), "decode_s": t2 - t1, "peak_gib": mem,
            "mfu": flops / (t1 - t0) / peak if peak else float("nan"),
            "audio_s": args.latents * autoencoder.downsampling_ratio / autoencoder.sample_rate}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="smoke sizes: dit=tiny, autoencoder=tiny, 128 latents, eager")
    p.add_argument("--latents", type=int, default=None, help="latent frames (default 6144 = 4m45s; --small: 256)")
    p.add_argument("--cond-dim", type=int, default=768, help="conditioning token width (T5-base: 768)")
    p.add_argument("--cond-tokens", type=int, default=130, help="prompt + timing tokens")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--compile", choices=["both", "off", "on"], default=None,
                   help="torch.compile the DiT (default: both; --small: off)")
    p.add_argument("--v-steps", type=int, default=100)
    p.add_argument("--arc-steps", type=int, default=8)
    p.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak of the device (default: by name)")
    args = p.parse_args(argv)
    if args.latents is None:
        args.latents = 128 if args.small else 6144
    if args.compile is None:
        args.compile = "off" if args.small else "both"
    if args.small:
        args.v_steps, args.arc_steps, args.cond_dim = min(args.v_steps, 10), min(args.arc_steps, 4), 64
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    net, autoencoder = build(args, device, dtype)
    from musicdiff.diffusion import make_denoiser

    cond = {"cross_attn_cond": torch.randn(1, args.cond_tokens, args.cond_dim, device=device, dtype=dtype),
            "global_cond": torch.randn(1, 2 * args.cond_dim, device=device, dtype=dtype)}
    uncond = dict(cond, cross_attn_cond=torch.zeros_like(cond["cross_attn_cond"]))
    specs = {
        f"dpmpp_{args.v_steps}_cfg": (OmegaConf.merge(OmegaConf.load(CONF / "sampler" / "dpmpp_3m_sde.yaml"),
                                                      {"steps": args.v_steps, "cfg_scale": 7.0}), "v"),
        f"arc_{args.arc_steps}": (OmegaConf.merge(OmegaConf.load(CONF / "sampler" / "flow_pingpong.yaml"),
                                                  {"steps": args.arc_steps, "cfg_scale": 1.0}), "rf_denoiser"),
    }
    params = sum(p.numel() for p in net.parameters()) / 1e6
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={name} dtype={args.dtype} DiT={params:.0f}M latents={args.latents} "
          f"peak_bf16={peak_flops(device, args.peak_tflops) or float('nan'):.3g} FLOP/s")
    print(f"{'case':<18}{'compile':>8}{'steps':>6}{'s/gen':>9}{'RTF':>8}{'DiT it/s':>10}{'decode s':>10}"
          f"{'peak GiB':>10}{'MFU':>7}")
    rows = []
    modes = {"both": [False, True], "off": [False], "on": [True]}[args.compile]
    for compiled in modes:
        model = torch.compile(net) if compiled else net
        for case, (node, objective) in specs.items():
            spec = instantiate(node)
            row = run_case(case, spec, make_denoiser(model, objective, spec.space), net, autoencoder, args, device,
                           dtype, cond, uncond)
            row["compile"] = compiled
            rows.append(row)
            print(f"{case:<18}{'yes' if compiled else 'no':>8}{row['steps']:>6}{row['total_s']:>9.3f}"
                  f"{row['audio_s'] / row['total_s']:>8.1f}{row['dit_steps_per_s']:>10.2f}{row['decode_s']:>10.3f}"
                  f"{row['peak_gib']:>10.2f}{row['mfu']:>7.1%}")
    by = {(r["case"], r["compile"]): r for r in rows}
    for compiled in modes:
        v, a = by[(f"dpmpp_{args.v_steps}_cfg", compiled)], by[(f"arc_{args.arc_steps}", compiled)]
        print(f"compile={'yes' if compiled else 'no'}: ARC {args.arc_steps} steps is {v['total_s'] / a['total_s']:.1f}x "
              f"faster per generation than {args.v_steps}-step DPM-Solver++ with CFG "
              f"({v['sample_s'] / a['sample_s']:.1f}x on the sampling loop alone)")
    return rows


if __name__ == "__main__":
    main()
