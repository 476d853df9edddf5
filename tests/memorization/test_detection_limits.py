"""Where planted-copy detection stops: copies of a training clip that went through the trained tiny
autoencoder, a gain change, added noise or a time shift, scored by the default embedder (``randconv``)
at the default ``repeat_threshold`` of ``conf/memorization.yaml``.

The training set is the tiny pipeline's vocabulary (square/saw notes on C4 E4 G4 B4, 1 s clips), so
it has repeats (same instrument, note and tempo, other pan). A variant is *detected* when its nearest
training item is the source or one of the source's repeats, at or above the threshold. Fresh clips of
the same vocabulary (not in the training set) are the false-positive control. The measured table is
in docs/MEMORIZATION.md ("How far detection reaches").
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from musicdiff.data.synthetic import synthesize_item
from musicdiff.memorization import IN_DISTRIBUTION, AudioItem, run_memorization_analysis
from tests.helpers.tiny_pipeline import INSTRUMENTS, ROOTS

SR = 16000
VOCAB = {"instruments": INSTRUMENTS, "notes": ROOTS, "chord_prob": 0.0}
SOURCE = 7  # the planted training clip


def _clip(index: int) -> tuple[torch.Tensor, str]:
    audio, fields = synthesize_item(index, SR, 1.0, seed=0, **VOCAB)
    return torch.from_numpy(audio.T.copy()), fields["caption"]


def _shift(audio: torch.Tensor, seconds: float) -> torch.Tensor:
    """The clip starting ``seconds`` later (silence before, the end cut: same length)."""
    return F.pad(audio, (int(round(seconds * SR)), 0))[..., : audio.shape[-1]]


def variants(x: torch.Tensor, autoencoder) -> dict[str, torch.Tensor]:
    """Transformed copies of ``x`` ``[C, T]``, mildest first within each kind."""
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        recon = autoencoder(x[None], sample=False)[0]
    return {
        "exact copy": x.clone(),
        "noise 1e-3": x + 1e-3 * noise,
        "noise 1e-2": x + 1e-2 * noise,
        "gain -6 dB": x * 10 ** (-6 / 20),
        "gain -20 dB": x * 10 ** (-20 / 20),
        "autoencoder round trip": recon,
        "autoencoder + gain -6 dB": recon * 10 ** (-6 / 20),
        "shift 0.05 s": _shift(x, 0.05),
        "shift 0.1 s": _shift(x, 0.1),
        "shift 0.25 s": _shift(x, 0.25),
        "shift 0.5 s": _shift(x, 0.5),
        "autoencoder + shift 0.1 s": _shift(recon, 0.1),
    }


@pytest.mark.slow
def test_where_planted_copy_detection_stops(trained_tiny, tmp_path):
    from tests.conftest import compose_root

    cfg = compose_root("memorization", [])
    embedder, threshold = instantiate(cfg.embedder), float(cfg.repeat_threshold)
    assert type(embedder).__name__ == "RandomConvEmbedder" and threshold == 0.95  # the defaults under test
    train = [AudioItem(f"train_{i:02d}", caption, audio=audio, sample_rate=SR)
             for i, (audio, caption) in enumerate(_clip(i) for i in range(32))]
    planted = variants(train[SOURCE].audio, trained_tiny.autoencoder)
    fresh = {f"fresh clip {i}": _clip(100 + i)[0] for i in range(6)}  # same vocabulary, not training items
    names = [*planted, *fresh]
    gens = [AudioItem(name, train[SOURCE].prompt, audio=audio, sample_rate=SR, split=IN_DISTRIBUTION)
            for name, audio in {**planted, **fresh}.items()]
    res = run_memorization_analysis(embedder, train, gens, tmp_path / "mem", k=3, repeat_threshold=threshold,
                                    report=False)
    group = next((set(g) for g in res.repeats.groups if SOURCE in g), {SOURCE})
    table = {}
    for m in res.ranking:
        source_sim = max((s for n, s in zip(m.neighbours, m.similarities) if n in group), default=None)
        table[names[m.generation]] = {
            "top_similarity": round(m.top_similarity, 4), "nearest": m.neighbours[0],
            "source_or_repeat_first": m.neighbours[0] in group, "source_group_similarity": source_sim,
            "above_threshold": m.top_similarity >= threshold,
            "detected": m.neighbours[0] in group and m.top_similarity >= threshold}
    (tmp_path / "detection_limits.json").write_text(json.dumps({"group": sorted(group), "rows": table}, indent=1))
    detected = {n for n, r in table.items() if r["detected"]}
    # Measured (the table in docs/MEMORIZATION.md): exact, gain and small shifts are found; added noise
    # of 1e-2, shifts of 0.5 s and every copy that went through the tiny autoencoder are not. Update
    # the docs table when this changes (e.g. a more robust embedder).
    assert detected == {"exact copy", "noise 1e-3", "gain -6 dB", "gain -20 dB", "shift 0.05 s", "shift 0.1 s",
                        "shift 0.25 s"}, table
    assert table["exact copy"]["top_similarity"] == pytest.approx(1.0, abs=1e-5)
    for name in ("gain -6 dB", "gain -20 dB"):  # the embedder is gain-invariant
        assert table[name]["top_similarity"] == pytest.approx(1.0, abs=1e-4)
    # The autoencoded copy still has the source's repeat group among its 3 nearest, below the threshold
    # (0.84 and 0.88 with the tiny autoencoder of two training recipes).
    assert table["autoencoder round trip"]["source_group_similarity"] is not None
    assert table["autoencoder round trip"]["top_similarity"] < threshold
    # At this threshold fresh clips of the same small vocabulary count as replicas too: it cannot
    # separate copies from style-alike clips here (run.sh uses 0.99; exact copies score 1.0).
    assert all(table[n]["above_threshold"] for n in fresh), table
