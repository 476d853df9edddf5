"""Signal helpers shared by the data tests."""

from __future__ import annotations

import numpy as np


def tone(freq: float, sr: int, seconds: float, channels: int = 1, amp: float = 0.5) -> np.ndarray:
    """A sine ``[T, channels]``; channel ``c`` is scaled by ``1 / (c + 1)`` so channels differ."""
    t = np.arange(int(round(sr * seconds))) / sr
    x = amp * np.sin(2 * np.pi * freq * t)
    return np.stack([x / (c + 1) for c in range(channels)], axis=1).astype(np.float32)


def dominant_frequency(x: np.ndarray, sr: int) -> float:
    """Frequency (Hz) of the largest FFT bin of a 1-D signal (Hann window)."""
    x = np.asarray(x, dtype=np.float64)
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))
