"""A-weighting pre-emphasis FIR filter for perceptually weighted spectral losses.

Wright & Välimäki 2019 ("Perceptual loss function for neural modelling of audio systems"): the
analog A-weighting curve (IEC 61672) is discretised with the bilinear transform and fitted by a
101-tap least-squares FIR; both signals are filtered before the STFT. Same design as auraloss'
``FIRFilter(filter_type="aw")``, which stable-audio-tools uses for SA2's STFT loss.
"""

from __future__ import annotations

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn

# pole frequencies (Hz) and 1 kHz gain (dB) of the A-weighting curve
_F1, _F2, _F3, _F4, _A1000 = 20.598997, 107.65265, 737.86223, 12194.217, 1.9997


def a_weighting_fir(sample_rate: int, ntaps: int = 101) -> np.ndarray:
    """Least-squares FIR approximation of the A-weighting magnitude response.

    Args:
        sample_rate: in Hz.
        ntaps: odd number of taps.

    Returns:
        ``float32 [ntaps]`` filter taps.
    """
    if ntaps % 2 == 0:
        raise ValueError(f"ntaps must be odd, got {ntaps}")
    num = [(2 * np.pi * _F4) ** 2 * (10 ** (_A1000 / 20)), 0, 0, 0, 0]
    den = np.polymul([1, 4 * np.pi * _F4, (2 * np.pi * _F4) ** 2], [1, 4 * np.pi * _F1, (2 * np.pi * _F1) ** 2])
    den = np.polymul(np.polymul(den, [1, 2 * np.pi * _F3]), [1, 2 * np.pi * _F2])
    b, a = scipy.signal.bilinear(num, den, fs=sample_rate)
    freqs, response = scipy.signal.freqz(b, a, worN=512, fs=sample_rate)
    return scipy.signal.firls(ntaps, freqs, np.abs(response), fs=sample_rate).astype("float32")


class AWeighting(nn.Module):
    """Filter ``[B, C, T]`` audio channel-wise with the A-weighting FIR (same length out).

    Args:
        sample_rate: in Hz.
        ntaps: odd number of FIR taps (101 as in auraloss).
    """

    def __init__(self, sample_rate: int, ntaps: int = 101) -> None:
        super().__init__()
        self.sample_rate, self.ntaps = int(sample_rate), ntaps
        self.register_buffer("taps", torch.from_numpy(a_weighting_fir(self.sample_rate, ntaps)).view(1, 1, -1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        y = F.conv1d(x.reshape(b * c, 1, t), self.taps.to(x.dtype), padding=self.ntaps // 2)
        return y.reshape(b, c, t)
