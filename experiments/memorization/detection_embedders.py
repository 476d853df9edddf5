"""Which embedder finds planted replicas: the weight-free detector (randconv) against musicnn.

The planted-copy benchmark of ``tests/memorization/test_detection_limits.py`` (docs/MEMORIZATION.md,
"How far detection reaches") without the trained autoencoder: 32 one-second training clips of the
tiny pipeline's vocabulary (square/saw notes C4 E4 G4 B4), transformed copies of training clip 7
as generations, and 6 fresh clips of the same vocabulary as the false-positive control. For each
embedder it prints, per generation, the top similarity and whether the nearest training item is
the source or one of its repeats (same instrument and note, another tempo or pan), then

* ``found``: copies whose nearest item is in the source group at or above the threshold;
* ``false``: fresh clips at or above the threshold;
* ``margin``: lowest copy similarity minus highest fresh-clip similarity (> 0: some threshold
  separates every copy from every fresh clip).

Thresholds: ``--thresholds`` per embedder (default 0.95 for both, the memorization default).

    OMP_NUM_THREADS=1 python experiments/memorization/detection_embedders.py
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import torch.nn.functional as F

from musicdiff.data.synthetic import synthesize_item
from musicdiff.evaluation.embedders import RandomConvEmbedder
from musicdiff.evaluation.musicnn import MusicnnEmbedder
from musicdiff.memorization import IN_DISTRIBUTION, AudioItem, run_memorization_analysis

SR = 16000
VOCAB = {"instruments": ["square", "saw"], "notes": ["C4", "E4", "G4", "B4"], "chord_prob": 0.0}
SOURCE = 7


def _clip(index: int) -> tuple[torch.Tensor, str]:
    audio, fields = synthesize_item(index, SR, 1.0, seed=0, **VOCAB)
    return torch.from_numpy(audio.T.copy()), fields["caption"]


def _shift(x: torch.Tensor, seconds: float) -> torch.Tensor:
    return F.pad(x, (int(round(seconds * SR)), 0))[..., : x.shape[-1]]


def variants(x: torch.Tensor) -> dict[str, torch.Tensor]:
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    return {"exact copy": x.clone(), "noise 1e-3": x + 1e-3 * noise, "noise 1e-2": x + 1e-2 * noise,
            "gain -6 dB": x * 10 ** (-6 / 20), "gain -20 dB": x * 10 ** (-20 / 20), "shift 0.05 s": _shift(x, 0.05),
            "shift 0.1 s": _shift(x, 0.1), "shift 0.25 s": _shift(x, 0.25), "shift 0.5 s": _shift(x, 0.5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--thresholds", type=float, nargs=2, default=[0.95, 0.95], metavar=("RANDCONV", "MUSICNN"))
    args = ap.parse_args()
    train = [AudioItem(f"train_{i:02d}", caption, audio=audio, sample_rate=SR)
             for i, (audio, caption) in enumerate(_clip(i) for i in range(32))]
    planted = variants(train[SOURCE].audio)
    fresh = {f"fresh clip {i}": _clip(100 + i)[0] for i in range(6)}
    names = [*planted, *fresh]
    gens = [AudioItem(n, train[SOURCE].prompt, audio=a, sample_rate=SR, split=IN_DISTRIBUTION)
            for n, a in {**planted, **fresh}.items()]
    rows: dict[str, dict[str, str]] = {n: {} for n in names}
    for (label, embedder), threshold in zip((("randconv", RandomConvEmbedder()), ("musicnn", MusicnnEmbedder())),
                                            args.thresholds):
        t0 = time.process_time()
        with tempfile.TemporaryDirectory() as tmp:
            res = run_memorization_analysis(embedder, train, gens, tmp, k=3, repeat_threshold=threshold, report=False)
        seconds = time.process_time() - t0
        group = next((set(g) for g in res.repeats.groups if SOURCE in g), {SOURCE})
        found = false = 0
        copy_sims, fresh_sims = [], []
        for m in res.ranking:
            name = names[m.generation]
            in_group = m.neighbours[0] in group
            rows[name][label] = f"{m.top_similarity:.3f} {'src' if in_group else 'other'}"
            if name in planted:
                found += in_group and m.top_similarity >= threshold
                copy_sims.append(m.top_similarity)
            else:
                false += m.top_similarity >= threshold
                fresh_sims.append(m.top_similarity)
        print(f"{label}: threshold {threshold}, repeat group of the source {sorted(group)}, "
              f"found {found}/{len(planted)} copies, {false}/{len(fresh)} fresh clips flagged, "
              f"margin {min(copy_sims) - max(fresh_sims):+.3f}, {seconds:.1f} s CPU")
    print(f"\n{'generation':<16}{'randconv':>16}{'musicnn':>16}")
    for name, r in rows.items():
        print(f"{name:<16}{r.get('randconv', ''):>16}{r.get('musicnn', ''):>16}")


if __name__ == "__main__":
    main()
