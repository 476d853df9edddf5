"""Reconstruction study on the real-music check set: trained autoencoders against codecs of the same bitrate.

For every clip of the check set, a 2 s excerpt (from 2 s in, at the autoencoder's rate) is passed through
each system and scored with SA2 Table 1's metrics (STFT distance, MEL distance, SI-SDR;
``musicdiff.evaluation.reconstruction``). The baselines spend the bitrate of the autoencoder's latents
(``latent_dim x sample_rate / downsampling_ratio`` values per second at 16 bits):

* ``lowpass``: each channel resampled down to the rate that fits the budget (16-bit PCM), then back up;
* ``mulaw8``: 8-bit mu-law at twice that rate;
* ``mulaw_fullrate``: mu-law at the full rate with the bits per sample that fit (2 bits for the tiny VAE).

Writes ``results.json``, a Markdown table (printed) and listening examples (``examples/<clip>__<system>.wav``)::

    python experiments/real_music/study.py --checkset outputs/data/real_music \
        --autoencoder tiny=outputs/real_music/tiny_ae/export --out outputs/real_music/study
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import soxr
import torch

from musicdiff.data.audio_io import load_audio, save_audio
from musicdiff.evaluation.reconstruction import ReconstructionMetrics


def mu_law(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantise to ``bits``-bit mu-law (mu = 2^bits - 1) and expand back."""
    mu = 2**bits - 1
    y = torch.sign(x) * torch.log1p(mu * x.abs().clamp(max=1.0)) / math.log1p(mu)
    q = torch.round((y + 1) / 2 * mu) / mu * 2 - 1
    return torch.sign(q) * ((1 + mu) ** q.abs() - 1) / mu


def resample(x: torch.Tensor, sr_in: int, sr_out: int) -> torch.Tensor:
    """``[C, T]`` resampled with soxr (HQ)."""
    y = soxr.resample(x.T.numpy().astype(np.float64), sr_in, sr_out, quality="HQ")
    return torch.from_numpy(np.ascontiguousarray(y.T)).float()


def lowpass_codec(x: torch.Tensor, sr: int, rate: int, bits: int = 16) -> torch.Tensor:
    """Down to ``rate`` Hz, quantised to ``bits`` bits PCM, back to ``sr`` (same length)."""
    low = resample(x, sr, rate)
    low = torch.round(low.clamp(-1, 1) * (2 ** (bits - 1) - 1)) / (2 ** (bits - 1) - 1)
    return resample(low, rate, sr)[..., : x.shape[-1]]


def baselines(sr: int, channels: int, values_per_second: float) -> dict[str, callable]:
    """Codecs that spend ``values_per_second`` 16-bit values (the latent budget)."""
    bits_per_second = 16 * values_per_second
    pcm_rate = int(values_per_second / channels)              # 16-bit samples per channel per second
    mulaw_rate = int(bits_per_second / (8 * channels))        # 8-bit mu-law samples per channel per second
    full_bits = max(1, int(bits_per_second // (sr * channels)))
    return {f"lowpass ({pcm_rate} Hz, 16 bit)": lambda x: lowpass_codec(x, sr, pcm_rate),
            f"mulaw8 ({mulaw_rate} Hz)": lambda x: resample(mu_law(resample(x, sr, mulaw_rate), 8), mulaw_rate,
                                                             sr)[..., : x.shape[-1]],
            f"mulaw{full_bits} (full rate)": lambda x: mu_law(x, full_bits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkset", default="outputs/data/real_music")
    parser.add_argument("--autoencoder", action="append", default=[], help="name=<export|checkpoint> (repeatable)")
    parser.add_argument("--out", default="outputs/real_music/study")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--offset", type=float, default=2.0)
    parser.add_argument("--examples", type=int, default=3, help="clips written as listening examples")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from musicdiff.pretrained import load_pretrained

    models = {}
    for spec in args.autoencoder:
        name, path = spec.split("=", 1)
        models[name] = load_pretrained(path, parts=("autoencoder",)).autoencoder.eval()
    if not models:
        raise SystemExit("pass at least one --autoencoder name=<export>")
    rates = {(m.sample_rate, m.io_channels, m.latent_dim * m.sample_rate / m.downsampling_ratio)
             for m in models.values()}
    files = sorted(Path(args.checkset).glob("*.flac"))
    out = Path(args.out)
    (out / "examples").mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, list[float]]] = {}
    for sr, channels, vps in sorted(rates):
        metrics = ReconstructionMetrics(sr)
        systems: dict[str, callable] = {f"{n} VAE": (lambda x, m=m: m(x[None], sample=False)[0, :, : x.shape[-1]])
                                        for n, m in models.items() if m.sample_rate == sr}
        systems.update(baselines(sr, channels, vps))
        for i, path in enumerate(files):
            x = load_audio(path, sr, channels, offset=int(args.offset * sr), num_frames=int(args.seconds * sr))
            for name, codec in systems.items():
                with torch.no_grad():
                    y = codec(x).float()
                for k, v in metrics(y[None], x[None]).items():
                    rows.setdefault(f"{name} @ {sr} Hz", {}).setdefault(k, []).append(float(v))
                if i < args.examples:
                    tag = name.split(" (")[0].replace(" ", "_").replace(",", "")
                    save_audio(out / "examples" / f"{path.stem}__{tag}.wav", y.clamp(-1, 1), sr)
            if i < args.examples:
                save_audio(out / "examples" / f"{path.stem}__original.wav", x, sr)
    summary = {name: {k: float(np.mean(v)) for k, v in ms.items()} for name, ms in rows.items()}
    (out / "results.json").write_text(json.dumps({"files": [p.name for p in files], "summary": summary}, indent=1))
    keys = sorted(next(iter(summary.values())))
    print("| system | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, ms in summary.items():
        print(f"| {name} | " + " | ".join(f"{ms[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
