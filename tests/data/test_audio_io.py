"""Audio I/O: formats, resampling accuracy, crops, channel rules, bad-file errors, silence."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from musicdiff.data.audio_io import (
    AudioLoadError, audio_info, convert_channels, is_silent, load_audio, peak_db, resampled_length, save_audio,
)
from tests.data.helpers import dominant_frequency, tone


@pytest.mark.parametrize("ext,subtype,lossy", [("wav", "PCM_16", False), ("flac", None, False),
                                               ("ogg", None, True), ("mp3", None, True)])
def test_formats_round_trip(tmp_path, write_tone, ext, subtype, lossy):
    path = tmp_path / f"a.{ext}"
    try:
        write_tone(path, freq=440.0, sr=16000, seconds=1.0, channels=2, subtype=subtype)
    except Exception as e:  # pragma: no cover - depends on the libsndfile build
        pytest.skip(f"libsndfile cannot write {ext}: {e}")
    x = load_audio(path, 16000, 2)
    assert x.dtype == torch.float32 and x.shape[0] == 2
    if lossy:  # encoder delay/padding may change the length slightly
        assert abs(x.shape[1] - 16000) < 3000
        assert dominant_frequency(x[0].numpy(), 16000) == pytest.approx(440.0, abs=3.0)
    else:
        assert x.shape == (2, 16000)
        ref = tone(440.0, 16000, 1.0, 2).T
        assert np.abs(x.numpy() - ref).max() < 1e-3


@pytest.mark.parametrize("sr_in", [22050, 48000])
def test_resampling_keeps_frequency_and_length(tmp_path, write_tone, sr_in):
    path = write_tone(tmp_path / "a.wav", freq=1000.0, sr=sr_in, seconds=1.5, subtype="FLOAT")
    x = load_audio(path, 16000, 1)
    assert x.shape == (1, resampled_length(int(1.5 * sr_in), sr_in, 16000)) == (1, 24000)
    assert dominant_frequency(x[0].numpy(), 16000) == pytest.approx(1000.0, abs=1.0)
    # amplitude is preserved away from the edges
    assert float(x[0, 2000:-2000].abs().max()) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("sr_in", [44100, 48000, 16000])
def test_crop_matches_whole_file_resampling(tmp_path, sr_in):
    rng = np.random.default_rng(0)
    data = (0.3 * rng.standard_normal((int(2.3 * sr_in), 2))).astype(np.float32)
    path = tmp_path / "noise.wav"
    sf.write(str(path), data, sr_in, subtype="FLOAT")
    full = torch.from_numpy(soxr.resample(data, sr_in, 16000, quality="HQ").T.copy())
    whole = load_audio(path, 16000, 2)
    assert whole.shape[1] == resampled_length(data.shape[0], sr_in, 16000)
    assert torch.allclose(whole[:, : full.shape[1]], full[:, : whole.shape[1]], atol=1e-6)
    for offset, n in [(0, 5000), (7777, 12000), (whole.shape[1] - 3000, 3000), (whole.shape[1] - 100, 5000)]:
        crop = load_audio(path, 16000, 2, offset=offset, num_frames=n)
        assert crop.shape[1] == min(n, whole.shape[1] - offset)
        assert (crop - whole[:, offset: offset + crop.shape[1]]).abs().max() < 1e-5  # exact up to rounding
    assert load_audio(path, 16000, 2, offset=whole.shape[1] + 10, num_frames=5).shape == (2, 0)


def test_channel_rules():
    x = np.stack([np.full(4, v, np.float32) for v in (1, 2, 3, 4, 5, 6)], axis=1)  # [T, 6] "5.1"
    assert np.allclose(convert_channels(x[:, :1], 2), np.ones((4, 2)))  # mono -> duplicated
    assert np.allclose(convert_channels(x[:, :2], 1), np.full((4, 1), 1.5))  # stereo -> mean
    assert np.allclose(convert_channels(x, 2), x[:, :2])  # first N (SAT rule)
    assert np.allclose(convert_channels(x, 1), np.full((4, 1), 3.5))
    down = convert_channels(x, 2, "downmix")  # ITU: L + .707 C + .707 Ls, normalised
    assert np.allclose(down[:, 0], (1 + 0.7071 * 3 + 0.7071 * 5) / (1 + 2 * 0.7071), atol=1e-4)
    assert np.allclose(down[:, 1], (2 + 0.7071 * 3 + 0.7071 * 6) / (1 + 2 * 0.7071), atol=1e-4)
    assert np.allclose(convert_channels(x[:, :4], 2, "downmix"), np.stack([np.full(4, 2.0), np.full(4, 3.0)], 1))
    assert np.allclose(convert_channels(x[:, :2], 3), x[:, [0, 1, 0]])
    with pytest.raises(ValueError, match="multichannel"):
        convert_channels(x, 2, "bogus")


def test_multichannel_file(tmp_path, write_tone):
    path = write_tone(tmp_path / "surround.wav", channels=6, subtype="FLOAT")
    assert audio_info(path).channels == 6
    x = load_audio(path, 16000, 2)
    ref = tone(440.0, 16000, 1.0, 6).T
    assert torch.allclose(x, torch.from_numpy(ref[:2]), atol=1e-6)
    mono = load_audio(path, 16000, 1)
    assert torch.allclose(mono[0], torch.from_numpy(ref.mean(0)), atol=1e-6)
    stereo_from_mono = load_audio(write_tone(tmp_path / "m.wav"), 16000, 2)
    assert torch.equal(stereo_from_mono[0], stereo_from_mono[1])


def test_bad_files_raise_with_reason(tmp_path, write_tone):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(5000))
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    zero = tmp_path / "zero.wav"
    sf.write(str(zero), np.zeros((0, 2), np.float32), 16000)
    nan = tmp_path / "nan.wav"
    data = tone(440.0, 16000, 0.5, 2)
    data[100, 1] = np.nan
    sf.write(str(nan), data, 16000, subtype="FLOAT")
    text = tmp_path / "notes.flac"
    text.write_text("this is not audio\n" * 20)
    cases = {corrupt: "unreadable", empty: "unreadable", zero: "empty", nan: "non_finite", text: "unreadable",
             tmp_path / "missing.wav": "missing"}
    for path, reason in cases.items():
        with pytest.raises(AudioLoadError) as err:
            load_audio(path, 16000, 2)
        assert err.value.reason == reason, path
        assert str(path) in str(err.value)
        assert isinstance(err.value, ValueError)


def test_wrong_extension_is_read_by_content(tmp_path, write_tone):
    flac_named_wav = tmp_path / "x.wav"
    sf.write(str(flac_named_wav), tone(440.0, 16000, 0.5, 2), 16000, format="FLAC")
    assert audio_info(flac_named_wav).format == "FLAC"
    assert load_audio(flac_named_wav, 16000, 2).shape == (2, 8000)


def test_silence_helpers(tmp_path):
    assert is_silent(torch.zeros(2, 100)) and peak_db(torch.zeros(2, 10)) == float("-inf")
    assert is_silent(torch.full((2, 100), 1e-4)) and not is_silent(torch.full((2, 100), 1e-2))
    assert peak_db(np.array([0.5])) == pytest.approx(-6.02, abs=0.01)
    save_audio(tmp_path / "s.wav", torch.full((2, 50), 0.25), 16000)
    assert sf.info(str(tmp_path / "s.wav")).subtype == "PCM_16"
    assert torch.allclose(load_audio(tmp_path / "s.wav", 16000, 2), torch.full((2, 50), 0.25), atol=1e-4)
