"""Learning test of the whole tiny pipeline (issue 4): train the tiny autoencoder → pre-encode →
train the tiny DiT with the lookup-table text conditioner → generate from prompts naming a pitch, and
check that the dominant pitch of the generated audio matches the prompt far more often than chance.

Data: synthetic square/saw notes on four roots (C4 E4 G4 B4; 4-way chance = 25 %) with SA2-style
timing labels. The autoencoder is trained on reconstruction losses only (multi-resolution STFT + KL;
the adversarial terms are covered by the task tests) to keep the test at a few CPU minutes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicdiff.data.synthetic import NOTES, note_frequency

ROOTS = ["C4", "E4", "G4", "B4"]
DATA = ["dataset.instruments=[square,saw]", f"dataset.notes=[{','.join(ROOTS)}]", "dataset.chord_prob=0.0",
        "dataset.num_items=32"]


def dominant_note(audio: np.ndarray, sample_rate: int) -> tuple[str, float]:
    """Nearest natural note (C4–B4) to the strongest spectral peak between 200 and 600 Hz.

    The band holds every fundamental of the data (262–494 Hz) and none of their harmonics.
    """
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    spec = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    freqs = np.fft.rfftfreq(len(mono), 1.0 / sample_rate)
    band = (freqs > 200) & (freqs < 600)
    peak = float(freqs[band][spec[band].argmax()])
    return min(NOTES, key=lambda n: abs(np.log(note_frequency(n) / peak))), peak


def test_dominant_note_detector():
    sr = 16000
    t = np.arange(sr) / sr
    for note in ROOTS:
        f = note_frequency(note)
        square = sum(np.sin(2 * np.pi * k * f * t) / k for k in range(1, 12, 2))
        assert dominant_note(np.stack([square, 0.5 * square], 1), sr)[0] == note


@pytest.mark.slow
def test_tiny_pipeline_generates_the_prompted_pitch(tmp_path, tiny_pipeline_paths):
    from musicdiff.cli.generate import generate
    from tests.conftest import compose_root

    # Trained once per session by the tiny_pipeline_paths fixture (tests/helpers/tiny_pipeline.py:
    # musicdiff-train autoencoder -> musicdiff-encode -> musicdiff-train DiT on the data below), shared
    # with the other learning tests.
    dit_export = tiny_pipeline_paths["dit"]
    metrics = json.loads((dit_export.parent.parent / "COMPLETE").read_text())
    assert metrics["skipped_nonfinite"] == 0

    rows = [(f"{inst} playing {note} at 120 bpm panned center", seed, note)
            for note in ROOTS for seed, inst in enumerate(["square", "saw"] * 2 + ["square"])]
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("prompt,duration,seed\n" + "".join(f"{p},1.0,{s}\n" for p, s, _ in rows))
    paths = generate(compose_root("generate", [
        f"checkpoint={dit_export}", f"prompts_file={prompts}", "sampler=dpmpp_2m",
        "sampler.steps=25", "sampler.cfg_scale=4", f"paths.output_dir={tmp_path / 'gen'}",
        f"paths.log_dir={tmp_path / 'outputs'}", "logger=none"]))
    assert len(paths) == len(rows)
    detected = []
    for path, (_, _, want) in zip(paths, rows):
        audio, sr = sf.read(path)
        assert np.isfinite(audio).all() and abs(len(audio) / sr - 1.0) < 0.05
        detected.append((want, *dominant_note(audio, sr)))
    accuracy = float(np.mean([want == got for want, got, _ in detected]))
    (tmp_path / "pitch_accuracy.json").write_text(json.dumps({"accuracy": accuracy, "detected": detected}))
    # A model that ignores the prompt but plays a training root is right 25 % of the time
    # (P[>= 11 of 20] = 0.4 % under chance). Measured here: 0.75 (B4 is most often missed, a tone low).
    assert accuracy >= 0.55, detected
