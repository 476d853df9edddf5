"""Real-time factor of the samplers: seconds of audio generated per second of compute.

Runs every sampler option of ``conf/sampler/`` (with classifier-free guidance, i.e. a batched
cond/uncond DiT forward per evaluation) on a randomly initialised DiT and prints one row per
sampler and step count. Decoding is not included (see the autoencoder benchmarks). Audio seconds
are ``latents * ratio / sample_rate`` (SA2: 2048 / 44100, 21.5 latents per second).

The defaults run in well under a minute on a laptop CPU; for SA2-sized numbers on a GPU::

    python experiments/bench/sampler_rtf.py --device cuda --embed-dim 1536 --depth 24 --heads 24 \
        --latents 6144 --steps 100 --samplers dpmpp_3m_sde --dtype bfloat16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from hydra.utils import instantiate

from musicdiff.models.inference import fast_inference
from omegaconf import OmegaConf
from torch import nn

CONF = Path(__file__).resolve().parents[2] / "conf" / "sampler"


class _StubDiT(nn.Module):
    """Fallback network when the DiT is not importable: a 2-layer MLP over channels."""

    def __init__(self, io_channels: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(io_channels, width, 1), nn.GELU(), nn.Conv1d(width, io_channels, 1))

    def forward(self, x, t, cross_attn_cond=None, cross_attn_mask=None, global_cond=None):
        return self.net(x) + t.reshape(-1, 1, 1)


def build_dit(args: argparse.Namespace) -> nn.Module:
    try:
        from musicdiff.models.dit import DiffusionTransformer
    except ImportError:
        print("musicdiff.models.dit not importable: using a stub network")
        return _StubDiT(args.latent_dim, args.embed_dim)
    return DiffusionTransformer(
        io_channels=args.latent_dim, embed_dim=args.embed_dim, depth=args.depth, num_heads=args.heads,
        cond_token_dim=args.cond_dim, global_cond_dim=2 * args.cond_dim,
    )


def build_denoiser(dit: nn.Module):
    try:
        from musicdiff.diffusion import VDenoiser
    except ImportError:  # pragma: no cover - fallback with the same preconditioning
        from k_diffusion.external import VDenoiser
    return VDenoiser(dit)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samplers", nargs="+", default=["euler", "heun", "ddim", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde"])
    p.add_argument("--steps", type=int, nargs="+", default=[10, 25])
    p.add_argument("--latents", type=int, default=256, help="latent frames per item (SA2 window: 6144)")
    p.add_argument("--latent-dim", type=int, default=64)
    p.add_argument("--embed-dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--cond-dim", type=int, default=64, help="cross-attention token width")
    p.add_argument("--cond-tokens", type=int, default=66, help="prompt + timing tokens (SAO: 128 + 2)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--cfg", type=float, default=7.0)
    p.add_argument("--sample-rate", type=int, default=44100)
    p.add_argument("--ratio", type=int, default=2048, help="audio samples per latent")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    dit = build_dit(args).to(device=device, dtype=dtype).eval()
    denoiser = build_denoiser(dit)
    b, n = args.batch, args.cond_tokens
    cond = {
        "cross_attn_cond": torch.randn(b, n, args.cond_dim, device=device),
        "cross_attn_mask": torch.ones(b, n, dtype=torch.bool, device=device),
        "global_cond": torch.randn(b, 2 * args.cond_dim, device=device),
    }
    uncond = dict(cond, cross_attn_cond=torch.zeros_like(cond["cross_attn_cond"]))
    audio_s = args.batch * args.latents * args.ratio / args.sample_rate
    params = sum(p.numel() for p in dit.parameters()) / 1e6
    print(f"device={device} dtype={args.dtype} params={params:.1f}M batch={b} latents={args.latents} "
          f"audio={audio_s:.1f}s cfg={args.cfg}")
    print(f"{'sampler':<14}{'steps':>6}{'evals':>7}{'seconds':>10}{'RTF':>10}")
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    for name in args.samplers:
        spec = instantiate(OmegaConf.load(CONF / f"{name}.yaml"))
        guided = spec.guided(denoiser, scale=args.cfg)
        for steps in args.steps:
            evals = [0]

            def counted(x, sigma, **kw):
                evals[0] += 1
                return guided(x, sigma, **kw)

            sigmas = spec.sigmas(device, steps=steps)
            x = torch.randn(b, args.latent_dim, args.latents, device=device) * sigmas[0]
            with torch.inference_mode(), autocast, fast_inference(dit):
                spec.run(counted, x[:, :, :8], {"cond": cond, "uncond": uncond}, sigmas=sigmas[-3:], disable=True)
                evals[0] = 0  # the line above is a warm-up
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                out = spec.run(counted, x, {"cond": cond, "uncond": uncond}, sigmas=sigmas, seed=args.seed, disable=True)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed = time.perf_counter() - start
            assert torch.isfinite(out).all(), f"{name}: non-finite output"
            print(f"{name:<14}{steps:>6}{evals[0]:>7}{elapsed:>10.3f}{audio_s / elapsed:>10.1f}")


if __name__ == "__main__":
    main()
