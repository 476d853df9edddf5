"""Reconstruction metrics: SI-SDR known values, STFT / mel distances, mel filterbank."""

from __future__ import annotations

import math

import pytest
import torch

from musicdiff.evaluation.reconstruction import ReconstructionMetrics, si_sdr, stft_distance
from musicdiff.losses.mel import MultiScaleMelLoss, mel_filterbank


def _audio(t=8000, seed=0):
    return torch.randn(2, 2, t, generator=torch.Generator().manual_seed(seed)) * 0.3


def test_si_sdr_known_snr_and_scale_invariance():
    s = _audio(t=20000)
    noise = _audio(t=20000, seed=1)
    noise = noise - (noise * s).sum(-1, keepdim=True) / (s * s).sum(-1, keepdim=True) * s  # orthogonal to s
    noise = noise / noise.norm(dim=-1, keepdim=True) * s.norm(dim=-1, keepdim=True) / math.sqrt(10)  # SNR 10 dB
    assert si_sdr(s + noise, s).item() == pytest.approx(10.0, abs=0.05)
    assert si_sdr(3.0 * (s + noise), s).item() == pytest.approx(10.0, abs=0.05)  # scale-invariant
    assert si_sdr(s, s).item() > 60


def test_distances_zero_for_identical_and_grow_with_noise():
    x = _audio()
    mel = MultiScaleMelLoss(16000)
    assert stft_distance(x, x).item() == pytest.approx(0.0, abs=1e-6)
    assert mel(x, x).item() == pytest.approx(0.0, abs=1e-6)
    small, large = x + 0.01 * _audio(seed=2), x + 0.3 * _audio(seed=2)
    assert 0 < stft_distance(small, x) < stft_distance(large, x)
    assert 0 < mel(small, x) < mel(large, x)


def test_metrics_dict_and_trimming():
    x = _audio()
    out = ReconstructionMetrics(16000)(x[..., :7900] * 0.5, x)
    assert set(out) == {"stft", "mel", "si_sdr"} and all(math.isfinite(v) for v in out.values())
    assert out["si_sdr"] > 60  # a pure gain change is perfect under SI-SDR
    with pytest.raises(ValueError, match="matching"):
        stft_distance(x[:, :1], x)


def test_mel_filterbank_slaney_properties():
    fb = mel_filterbank(16000, 1024, 40)
    assert fb.shape == (40, 513) and (fb >= 0).all()
    centres = fb.argmax(-1)
    assert bool((centres[1:] >= centres[:-1]).all())  # increasing centre frequencies
    areas = fb.sum(-1) * (16000 / 1024)  # Slaney normalisation: unit area in Hz
    assert torch.allclose(areas[10:], torch.ones(30), atol=0.05)


def test_evaluate_reconstruction_folders(tmp_path):
    from musicdiff.data.audio_io import save_audio
    from musicdiff.evaluation.reconstruction import evaluate_reconstruction_folders

    (tmp_path / "ref" / "sub").mkdir(parents=True)
    (tmp_path / "gen" / "sub").mkdir(parents=True)
    for i, name in enumerate(["a", "sub/b"]):
        x = _audio(t=8000, seed=i)[0]
        save_audio(tmp_path / "ref" / f"{name}.wav", x, 16000)
        save_audio(tmp_path / "gen" / f"{name}.flac", x + 0.01 * _audio(t=8000, seed=9)[0], 16000)
    save_audio(tmp_path / "gen" / "unpaired.wav", _audio(t=8000)[0], 16000)
    out = evaluate_reconstruction_folders(tmp_path / "gen", tmp_path / "ref", 16000)
    assert out["recon_files"] == 2.0 and out["recon_si_sdr"] > 20 and out["recon_stft"] > 0
    with pytest.raises(ValueError, match="counterpart"):
        evaluate_reconstruction_folders(tmp_path / "gen" / "sub", tmp_path / "ref", 16000)
