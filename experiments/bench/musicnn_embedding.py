"""Seconds to embed audio with musicnn (``FD_musicnn``/``KL_musicnn``) against the weight-free proxies.

Workloads (synthetic audio, 16 kHz mono, every clip different):

* ``short``: 32 clips of 1 s (a sweep trial's or a memorization run's clips; musicnn repeat-pads each
  to one 3 s patch, so it costs 32 patches);
* ``long``: one 60 s track (20 patches);
* ``short, cached``: the same 32 clips again (a sweep's reference set in its second trial: musicnn's
  outputs are memoised per waveform digest inside the process).

Each embedder runs once to warm up (weights, kernels), then ``--repeats`` times; the median process
CPU time is printed (the dev machine is shared, so CPU time is steadier than wall time) next to the
wall time and the ratio musicnn / randconv.

    OMP_NUM_THREADS=1 python experiments/bench/musicnn_embedding.py
    python experiments/bench/musicnn_embedding.py --threads 8 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from musicdiff.evaluation import musicnn as musicnn_module
from musicdiff.evaluation.embedders import MelStatsEmbedder, RandomConvEmbedder
from musicdiff.evaluation.musicnn import MusicnnEmbedder

SR = 16000


def _clips(n: int, seconds: float, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR)) / SR
    out = []
    for _ in range(n):
        f0 = 110.0 * 2 ** (torch.rand(1, generator=g).item() * 3)
        tone = torch.sin(2 * torch.pi * f0 * t) * (0.5 + 0.5 * torch.sin(2 * torch.pi * 2 * t))
        out.append((0.3 * tone + 0.02 * torch.randn(t.shape, generator=g))[None])
    return out


def _time(fn, repeats: int) -> tuple[float, float]:
    cpu, wall = [], []
    for _ in range(repeats):
        c, w = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    workloads = {"short (32 x 1 s)": _clips(32, 1.0, 0), "long (1 x 60 s)": _clips(1, 60.0, 1)}
    embedders = {"melstats": MelStatsEmbedder(), "randconv": RandomConvEmbedder(), "musicnn": MusicnnEmbedder()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'workload':<24}{'embedder':<10}{'cpu s':>8}{'wall s':>8}{'x randconv':>12}")
    for wname, clips in workloads.items():
        base = None
        for ename, emb in embedders.items():
            def run() -> None:
                musicnn_module._OUTPUT_CACHE.clear()  # every repeat embeds from scratch
                emb.embed_audio(clips, SR)

            run()  # warm-up
            cpu, wall = _time(run, args.repeats)
            base = cpu if ename == "randconv" else base
            ratio = f"{cpu / base:.1f}" if base else "-"
            print(f"{wname:<24}{ename:<10}{cpu:>8.3f}{wall:>8.3f}{ratio:>12}")
    clips = workloads["short (32 x 1 s)"]
    emb = embedders["musicnn"]
    emb.embed_audio(clips, SR)  # fills the memo
    cpu, wall = _time(lambda: emb.embed_audio(clips, SR), args.repeats)
    print(f"{'short, cached':<24}{'musicnn':<10}{cpu:>8.3f}{wall:>8.3f}")


if __name__ == "__main__":
    main()
