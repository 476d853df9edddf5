"""Samples/s into the training step: audio folder vs WebDataset audio shards vs latent shards.

One synthetic corpus (noise-like FLAC or WAV files with captions) is read three ways, each through
the loader the Trainer builds (``Trainer._loader``: the map-style dataset with
ResumableShardedSampler, or ``make_loader`` of the streaming dataset), with SA2's shapes: 44.1 kHz
stereo, 2048x downsampling, 64 latent channels. Latent shards are written by ``encode_dataset``
with a stand-in encoder of those shapes (the data path does not depend on the weights). A
"training step" here is the collated batch handed to ``_to_device``; nothing is trained, so the
numbers are the ceiling the data path sets. Examples::

    python experiments/bench/data_throughput.py                       # 1 loader process (per-core rate)
    python experiments/bench/data_throughput.py --workers 2 --files 48 --seconds 30 --window 10

The projection for a cluster node multiplies the per-core rate by the cores a node gives its
loaders (``--node-cores``, default 64 = 8 GPUs x 8 workers) and compares it with what the DiT
consumes (``--step-samples-per-s``: SA2's global batch / step time on that node).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn

from musicdiff.data.audio_dataset import AudioFolderDataset
from musicdiff.data.latent_writer import encode_dataset
from musicdiff.data.make_shards import make_shards
from musicdiff.data.webdataset import WebDatasetShards
from musicdiff.training.trainer import Trainer, _to_device

SR, CH, RATIO, DIM = 44100, 2, 2048, 64


class StandInEncoder(nn.Module):
    """SA2 latent shapes (64 x T/2048) from average pooling: the encoder's cost is not what is measured."""

    sample_rate, io_channels, latent_dim, downsampling_ratio = SR, CH, DIM, RATIO

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv1d(CH, DIM, 1)

    def encode(self, audio: torch.Tensor, sample: bool = False) -> torch.Tensor:
        return self.proj(F.avg_pool1d(F.pad(audio, (0, -audio.shape[-1] % RATIO)), RATIO))

    def encode_chunked(self, audio, chunk_size=128, overlap=32, sample=False):
        return self.encode(audio)


def corpus(root: Path, files: int, seconds: float, fmt: str) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(files):
        t = np.arange(int(SR * seconds)) / SR
        x = 0.3 * np.sin(2 * np.pi * (110 + 20 * i) * t)[:, None] + 0.05 * rng.standard_normal((len(t), CH))
        sf.write(str(root / f"track{i:04d}.{fmt}"), x.astype(np.float32), SR, subtype="PCM_16")
        (root / f"track{i:04d}.json").write_text(json.dumps({"caption": f"track {i}", "genre": "bench"}))


def rate(dataset, batch: int, workers: int, epochs: int) -> float:
    """Samples/s over ``epochs`` epochs through the Trainer's loader on one process."""
    trainer = Trainer(batch_size=batch, num_workers=workers, progress=False)
    trainer.accelerator = type("A", (), {"device": torch.device("cpu")})()
    from musicdiff.training.data_order import ResumableShardedSampler

    sampler = ResumableShardedSampler(len(dataset), batch, 0, 1, seed=0)
    n, t0 = 0, time.perf_counter()
    for epoch in range(epochs):
        sampler.set_position(epoch, 0)
        dataset.set_epoch(epoch)
        for b in trainer._loader(dataset, sampler):
            b = _to_device(b, torch.device("cpu"))
            n += len(b["metadata"])
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each file")
    ap.add_argument("--window", type=float, default=10.0, help="training crop (s)")
    ap.add_argument("--format", default="flac", choices=["flac", "wav"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--node-cores", type=int, default=64, help="cores of a cluster node given to data loading")
    ap.add_argument("--step-samples-per-s", type=float, default=64.0,
                    help="training windows/s the DiT consumes on that node (an assumption: 8 GPUs x 8/s)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="data_bench_"))
    try:
        corpus(tmp / "audio", args.files, args.seconds, args.format)
        make_shards(tmp / "audio", tmp / "shards", shard_size=8, progress=False)
        encode_dataset(tmp / "audio", StandInEncoder(), tmp / "latents", shard_size=8, progress=False,
                       format="webdataset")
        sets = {
            "audio folder": AudioFolderDataset(tmp / "audio", SR, CH, args.window, window_multiple=RATIO),
            "audio shards": WebDatasetShards(str(tmp / "shards"), "audio", SR, CH, args.window,
                                             window_multiple=RATIO, shuffle_buffer=16),
            "latent shards": WebDatasetShards(str(tmp / "latents"), "latents", SR, CH, args.window,
                                              downsampling_ratio=RATIO, latent_dim=DIM, shuffle_buffer=16),
        }
        per_proc = max(1, args.workers)
        print(f"{args.files} x {args.seconds:g} s {args.format} files, {args.window:g} s windows, batch {args.batch}, "
              f"{args.workers} workers")
        print("| data | samples/s | per loader core | node projection | vs DiT demand |")
        print("|---|---|---|---|---|")
        for name, ds in sets.items():
            r = rate(ds, args.batch, args.workers, args.epochs)
            node = r / per_proc * args.node_cores
            print(f"| {name} | {r:.1f} | {r / per_proc:.1f} | {node:.0f} | {node / args.step_samples_per_s:.1f}x |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
