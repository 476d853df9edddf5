"""Deterministic synthetic 16 kHz clips for the musicnn parity fixture (numpy only).

Shared by ``tests/evaluation/test_musicnn.py`` and ``fixtures/make_musicnn_reference.py``
(which runs in a throwaway TensorFlow venv without torch or musicdiff).
"""

from __future__ import annotations

import numpy as np

SR = 16000
SECONDS = 6.5  # two full 3 s musicnn patches (407 frames -> 2 x 187)


def _env(t: np.ndarray, period: float, decay: float) -> np.ndarray:
    return np.exp(-(t % period) / decay)


def musicnn_clips() -> dict[str, np.ndarray]:
    """Three float32 mono clips: a plucked harmonic chord, a drum-and-bass loop, a saw arpeggio."""
    t = np.arange(int(SR * SECONDS)) / SR
    rng = np.random.default_rng(1234)
    chord = sum(np.sin(2 * np.pi * f * k * t) / k for f in (220.0, 277.18, 329.63) for k in (1, 2, 3))
    chord = 0.15 * chord * _env(t, 0.75, 0.3)
    kick = np.sin(2 * np.pi * 60 * t) * _env(t, 0.5, 0.08)
    hats = rng.standard_normal(len(t)) * _env(t + 0.25, 0.5, 0.02)
    bass = np.sign(np.sin(2 * np.pi * 55 * t)) * 0.2 * _env(t, 0.25, 0.2)
    drums = 0.5 * kick + 0.2 * hats + bass
    notes = 440.0 * 2 ** (np.array([0, 3, 7, 12]) / 12)
    freq = notes[(t // 0.125).astype(int) % 4]
    phase = np.cumsum(freq) / SR
    saw = 0.3 * (2 * (phase % 1.0) - 1) * _env(t, 0.125, 0.1)
    return {name: np.clip(x, -1, 1).astype(np.float32) for name, x in
            (("chord", chord), ("drums", drums), ("saw", saw))}
