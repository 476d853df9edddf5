"""Multi-scale mel-spectrogram distance (Kumar et al. 2023, "DAC", §3.4 / audiotools).

For each scale ``i``: ``|log10 max(M_i(x), eps)^p - log10 max(M_i(y), eps)^p|`` averaged over bins and
frames (``M_i`` = magnitude STFT with window ``w_i``, hop ``w_i/4``, projected on ``n_mels_i`` Slaney mel
bands), summed over scales. DAC's defaults (7 scales, windows 32 … 2048, 5 … 320 mels) are the
"MEL distance" reported in SA2 Table 1. The mel filterbank reproduces ``librosa.filters.mel``
(Slaney scale and area normalisation) without the dependency.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

DAC_MEL_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
DAC_N_MELS = (5, 10, 20, 40, 80, 160, 320)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    mels = f / f_sp
    log_region = f >= min_log_hz
    mels = np.where(log_region, min_log_hz / f_sp + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)
    return mels


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> torch.Tensor:
    """Slaney-style triangular mel filterbank ``[n_mels, n_fft // 2 + 1]`` (as ``librosa.filters.mel``)."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return torch.from_numpy(weights.astype(np.float32))


class MultiScaleMelLoss(nn.Module):
    """DAC multi-scale mel distance for ``[B, C, T]`` audio (channels are treated independently).

    Args:
        sample_rate: in Hz.
        window_lengths: STFT windows (hop = window / 4, Hann, centred).
        n_mels: mel bands per scale.
        log_weight: weight of the log10-magnitude L1 term.
        mag_weight: weight of the linear mel L1 term.
        pow: exponent applied to the clamped mel magnitude before the log.
        clamp_eps: floor before the log.
    """

    def __init__(self, sample_rate: int, window_lengths: Sequence[int] = DAC_MEL_WINDOWS,
                 n_mels: Sequence[int] = DAC_N_MELS, log_weight: float = 1.0, mag_weight: float = 0.0,
                 pow: float = 1.0, clamp_eps: float = 1e-5) -> None:  # noqa: A002
        super().__init__()
        if len(window_lengths) != len(n_mels):
            raise ValueError(f"window_lengths ({len(window_lengths)}) and n_mels ({len(n_mels)}) differ in length")
        self.sample_rate = int(sample_rate)
        self.window_lengths = [int(w) for w in window_lengths]
        self.log_weight, self.mag_weight, self.pow, self.clamp_eps = log_weight, mag_weight, pow, clamp_eps
        for i, (w, m) in enumerate(zip(self.window_lengths, n_mels)):
            self.register_buffer(f"fb{i}", mel_filterbank(self.sample_rate, w, int(m)), persistent=False)
            self.register_buffer(f"win{i}", torch.hann_window(w), persistent=False)

    def mel(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Mel magnitude of ``x [N, T]`` at scale ``i`` → ``[N, n_mels, frames]``."""
        w = self.window_lengths[i]
        spec = torch.stft(x.float(), w, w // 4, w, getattr(self, f"win{i}"), return_complex=True).abs()
        return getattr(self, f"fb{i}") @ spec

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distance of prediction ``x`` to target ``y``."""
        if x.shape != y.shape:
            raise ValueError(f"prediction {tuple(x.shape)} and target {tuple(y.shape)} differ in shape")
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
        total = x.new_zeros(())
        for i in range(len(self.window_lengths)):
            xm, ym = self.mel(x, i), self.mel(y, i)
            if self.log_weight:
                lx = xm.clamp(min=self.clamp_eps).pow(self.pow).log10()
                ly = ym.clamp(min=self.clamp_eps).pow(self.pow).log10()
                total = total + self.log_weight * (lx - ly).abs().mean()
            if self.mag_weight:
                total = total + self.mag_weight * (xm - ym).abs().mean()
        return total
