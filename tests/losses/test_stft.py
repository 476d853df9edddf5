"""Multi-resolution STFT losses: known values, parity with stable-audio-tools' auraloss, A-weighting."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
import torch

from musicdiff.losses.perceptual import AWeighting, a_weighting_fir
from musicdiff.losses.stft import MultiResolutionSTFTLoss, STFTLoss, SumAndDifferenceSTFTLoss
from tests.helpers import skip_or_fail

# stable-audio-tools' copy of auraloss, read as a file (its package __init__ needs extras); make setup installs it
_SAT = importlib.util.find_spec("stable_audio_tools")
SAT_AURALOSS = (Path(_SAT.submodule_search_locations[0]) / "training" / "losses" / "auraloss.py" if _SAT
                else Path("/nonexistent"))
FFTS = [2048, 1024, 512, 256, 128, 64, 32]


def _signal(b=2, c=2, t=8000, seed=0):
    return torch.randn(b, c, t, generator=torch.Generator().manual_seed(seed))


def test_identical_signals_give_zero():
    x = _signal()
    assert MultiResolutionSTFTLoss(sample_rate=16000)(x, x).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_known_value_for_scaled_signal(gain):
    # x = g·y: spectral convergence = |1 - g|, log-magnitude L1 = |log g| (linear A-weighting keeps this)
    y = _signal()
    loss = MultiResolutionSTFTLoss(FFTS, sample_rate=16000)(gain * y, y).item()
    assert loss == pytest.approx(abs(1 - gain) + abs(math.log(gain)), rel=1e-3)
    single = STFTLoss(256, 64, w_sc=0.0)(gain * y, y).item()
    assert single == pytest.approx(abs(math.log(gain)), rel=1e-3)


def test_sum_and_difference_ignores_swapped_channels_only_in_mid():
    x = _signal(t=4096)
    mr = MultiResolutionSTFTLoss([512, 128], sample_rate=16000)
    swapped = x.flip(1)  # mid identical, side negated (same magnitudes)
    assert SumAndDifferenceSTFTLoss(mr)(swapped, x).item() == pytest.approx(0.0, abs=1e-5)
    assert mr(swapped, x).item() > 0.1


def test_a_weighting_response():
    taps = a_weighting_fir(44100)
    freqs, h = scipy.signal.freqz(taps, worN=4096, fs=44100)
    db = 20 * np.log10(np.abs(h) + 1e-12)
    at = lambda f: db[np.argmin(np.abs(freqs - f))]  # noqa: E731
    assert abs(at(1000)) < 0.5          # 0 dB at 1 kHz
    # lows attenuated (IEC: -19 dB at 100 Hz, -30 dB at 50 Hz; a 101-tap FIR is coarser there), 10 kHz ≈ -2.5 dB
    assert at(50) < at(100) < -10
    assert -5 < at(10000) < 1
    x = _signal(t=1000)
    assert AWeighting(44100)(x).shape == x.shape


def test_shape_mismatch_and_short_input_raise():
    loss = MultiResolutionSTFTLoss(sample_rate=16000)
    with pytest.raises(ValueError, match="differ in shape"):
        loss(_signal(t=4000), _signal(t=4001))
    with pytest.raises(ValueError, match="too short"):
        loss(_signal(t=512), _signal(t=512))
    with pytest.raises(ValueError, match="sample_rate"):
        MultiResolutionSTFTLoss(perceptual_weighting=True)


def test_parity_with_stable_audio_tools():
    if not SAT_AURALOSS.exists():
        skip_or_fail("stable-audio-tools reference not installed (its training/losses/auraloss.py)")
    spec = importlib.util.spec_from_file_location("sat_auraloss", SAT_AURALOSS)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    hops = [f // 4 for f in FFTS]
    x, y = _signal(seed=1), 0.3 * _signal(seed=1) + 0.5 * _signal(seed=2)
    mine = MultiResolutionSTFTLoss(FFTS, hops, FFTS, sample_rate=44100)
    theirs = ref.MultiResolutionSTFTLoss(FFTS, hops, FFTS, sample_rate=44100, perceptual_weighting=True)
    assert mine(x, y).item() == pytest.approx(theirs(x, y).item(), rel=1e-5)
    theirs_sd = ref.SumAndDifferenceSTFTLoss(FFTS, hops, FFTS, sample_rate=44100, perceptual_weighting=True)
    assert SumAndDifferenceSTFTLoss(mine)(x, y).item() == pytest.approx(theirs_sd(x, y).item(), rel=1e-5)
