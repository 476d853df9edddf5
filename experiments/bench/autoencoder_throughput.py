"""Encode/decode throughput (seconds of audio per second) and peak memory of an autoencoder preset.

Random weights (speed does not depend on them). Examples::

    python experiments/bench/autoencoder_throughput.py --autoencoder tiny --seconds 30
    python experiments/bench/autoencoder_throughput.py --autoencoder oobleck_sa2 --seconds 285 \\
        --device cuda --dtype bf16 --chunk-size 128 --overlap 32      # 4m45s, chunked

Peak memory is ``torch.cuda.max_memory_allocated`` on GPU and the growth of the process' max RSS
on CPU (a coarse upper bound). ``--chunk-size 0`` runs unchunked.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.config.paths import config_dir
from musicdiff.models.inference import fast_inference

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(name: str, device: torch.device, dtype: torch.dtype):
    """Instantiate ``conf/autoencoder/<name>.yaml`` in eval mode."""
    path = Path(config_dir()) / "autoencoder" / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no autoencoder preset {path}")
    cfg = OmegaConf.create({"autoencoder": OmegaConf.load(path)})
    return instantiate(cfg.autoencoder).to(device=device, dtype=dtype).eval()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mb(device: torch.device, rss0_kb: int) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0_kb) / 1024


def _timed(fn, device: torch.device, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats, out


@torch.inference_mode()
def run(args: argparse.Namespace) -> dict[str, float | str]:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype]
    torch.manual_seed(0)
    ae = build(args.autoencoder, device, dtype)
    fast = fast_inference(ae, enabled=not args.plain)  # the inference fast paths (musicdiff.models.inference)
    fast.__enter__()
    n = int(args.seconds * ae.sample_rate)
    audio = torch.randn(args.batch, ae.io_channels, n, device=device, dtype=dtype) * 0.1
    chunk = args.chunk_size
    if chunk:
        enc = lambda: ae.encode_chunked(audio, chunk, args.overlap)  # noqa: E731
    else:
        enc = lambda: ae.encode(audio, sample=False)  # noqa: E731
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_enc, latents = _timed(enc, device, args.repeats)
    enc_mem = _peak_mb(device, rss0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    dec = (lambda: ae.decode_chunked(latents, chunk, args.overlap)) if chunk else (lambda: ae.decode(latents))
    t_dec, _ = _timed(dec, device, args.repeats)
    dec_mem = _peak_mb(device, rss0)
    fast.__exit__(None, None, None)
    audio_s = args.batch * args.seconds
    return {
        "autoencoder": args.autoencoder, "device": str(device), "dtype": args.dtype, "batch": args.batch,
        "seconds": args.seconds, "chunk_size": chunk, "overlap": args.overlap,
        "params_M": round(sum(p.numel() for p in ae.parameters()) / 1e6, 2),
        "encode_audio_s_per_s": round(audio_s / t_enc, 2), "decode_audio_s_per_s": round(audio_s / t_dec, 2),
        "encode_peak_MB": round(enc_mem, 1), "decode_peak_MB": round(dec_mem, 1),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--plain", action="store_true", help="the plain model files, without fast_inference")
    p.add_argument("--autoencoder", default="tiny", help="preset in conf/autoencoder (tiny|small|oobleck_sa2)")
    p.add_argument("--seconds", type=float, default=10.0, help="audio length per item")
    p.add_argument("--batch", type=int, default=1, help="items per call")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda|cuda:N")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="model and audio dtype")
    p.add_argument("--chunk-size", type=int, default=128, help="latent frames per window (0: unchunked)")
    p.add_argument("--overlap", type=int, default=32, help="latent frames shared by neighbouring windows")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions after one warm-up")
    result = run(p.parse_args(argv))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
