"""AudioFolderDataset: skipping and counting bad files, crops, SA2 timing labels, padding, prompts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from musicdiff.data.audio_dataset import AudioFolderDataset
from musicdiff.data.collate import collate
from musicdiff.data.prompts import PromptBuilder
from tests.data.helpers import dominant_frequency

SR = 16000


def _ramp(path, seconds, sr=SR, channels=2):
    """Float WAV whose sample value encodes its position: x[t] = t / (T + 1)."""
    n = int(round(seconds * sr))
    x = (np.arange(n) / (n + 1)).astype(np.float32)
    sf.write(str(path), np.stack([x] * channels, axis=1), sr, subtype="FLOAT")
    return n


@pytest.fixture()
def messy_folder(tmp_path, write_tone):
    root = tmp_path / "audio"
    write_tone(root / "good_stereo.wav", freq=440.0, channels=2, seconds=1.5)
    write_tone(root / "sub/good_mono.flac", freq=330.0, seconds=1.2)
    write_tone(root / "good_48k.wav", freq=1000.0, sr=48000, seconds=1.0, channels=6, subtype="FLOAT")
    write_tone(root / "quiet_but_fine.ogg", freq=500.0, seconds=1.0, amp=0.01)
    (root / "corrupt.wav").write_bytes(np.random.default_rng(1).bytes(4096))
    (root / "empty.mp3").write_bytes(b"")
    sf.write(str(root / "zero.wav"), np.zeros((0, 2), np.float32), SR)
    sf.write(str(root / "silent.wav"), np.zeros((SR, 2), np.float32), SR)
    nan = np.full((SR, 2), 0.1, np.float32)
    nan[5] = np.nan
    sf.write(str(root / "nan.wav"), nan, SR, subtype="FLOAT")
    (root / "readme.txt").write_text("not audio, not scanned")
    (root / "metadata.json").write_text(json.dumps([
        {"path": "good_stereo.wav", "caption": "a stereo tone", "genre": "test"},
        {"path": "sub/good_mono.flac", "caption": "a mono tone"},
        {"path": "gone.wav", "caption": "listed but missing"},
    ]))
    return root


def test_bad_files_are_skipped_and_counted(messy_folder):
    ds = AudioFolderDataset(messy_folder, SR, 2, window_seconds=1.0, prompt_builder=PromptBuilder(caption_prob=1.0))
    assert sorted(p.name for p in ds.files) == ["good_48k.wav", "good_mono.flac", "good_stereo.wav",
                                                "quiet_but_fine.ogg"]
    assert dict(ds.skipped) == {"unreadable": 2, "empty": 1, "silent": 1, "non_finite": 1, "missing": 1}
    by_name = {ds.files[i].name: ds[i] for i in range(len(ds))}
    for item in by_name.values():
        assert item["audio"].shape == (2, SR) and item["audio"].dtype == torch.float32
        assert item["padding_mask"].shape == (SR,) and item["padding_mask"].dtype == torch.bool
    assert by_name["good_stereo.wav"]["prompt"] == "a stereo tone"
    assert by_name["good_mono.flac"]["prompt"] == "a mono tone"
    assert by_name["good_48k.wav"]["prompt"] == ""
    resampled = by_name["good_48k.wav"]["audio"][0].numpy()
    assert dominant_frequency(resampled, SR) == pytest.approx(1000.0, abs=1.5)
    mono = by_name["good_mono.flac"]["audio"]
    assert torch.equal(mono[0], mono[1])


def test_no_usable_audio_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="MUSICDIFF_AUDIO_DIR"):
        AudioFolderDataset(tmp_path / "missing", SR, 2, 1.0)
    (tmp_path / "bad.wav").write_bytes(b"garbage" * 100)
    sf.write(str(tmp_path / "silent.flac"), np.zeros((100, 1), np.float32), SR)
    with pytest.raises(ValueError, match=r"no usable audio .*unreadable.*silent|no usable audio .*silent.*unreadable"):
        AudioFolderDataset(tmp_path, SR, 2, 1.0)
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        AudioFolderDataset(tmp_path, SR, 2, 1.0, manifest="nope.csv")


def test_random_crop_offsets_and_timing_labels(tmp_path):
    n = _ramp(tmp_path / "ramp.wav", 3.5)
    ds = AudioFolderDataset(tmp_path, SR, 2, window_seconds=1.0, skip_silent=False)
    offsets = set()
    for _ in range(30):
        item = ds[0]
        offset = int(round(float(item["audio"][0, 0]) * (n + 1)))
        assert 0 <= offset <= n - SR
        assert torch.allclose(item["audio"][0], torch.arange(offset, offset + SR) / (n + 1), atol=1e-6)
        assert item["padding_mask"].all()
        assert item["seconds_start"] == math.floor(offset / SR)
        assert item["seconds_total"] == 4.0  # ceil(3.5 s), as stable-audio-tools
        assert isinstance(item["seconds_start"], float)
        offsets.add(offset)
    assert len(offsets) > 20
    assert {math.floor(o / SR) for o in offsets} == {0, 1, 2}
    fixed = AudioFolderDataset(tmp_path, SR, 2, window_seconds=1.0, random_crop=False, skip_silent=False)
    assert {float(fixed[0]["audio"][0, 0]) for _ in range(3)} == {0.0}


def test_short_files_are_padded_with_a_mask(tmp_path, write_tone):
    write_tone(tmp_path / "short.wav", seconds=0.3, channels=2)
    ds = AudioFolderDataset(tmp_path, SR, 2, window_seconds=1.0, window_multiple=1024)
    assert ds.window_frames == 16384
    item = ds[0]
    assert item["audio"].shape == (2, 16384)
    assert int(item["padding_mask"].sum()) == 4800 and bool(item["padding_mask"][:4800].all())
    assert float(item["audio"][:, 4800:].abs().max()) == 0.0
    assert (item["seconds_start"], item["seconds_total"]) == (0.0, 1.0)


def test_resampled_crops_match_the_whole_file(tmp_path, write_tone):
    write_tone(tmp_path / "a.wav", freq=700.0, sr=44100, seconds=2.0, channels=2, subtype="FLOAT")
    ds = AudioFolderDataset(tmp_path, SR, 2, window_seconds=0.5)
    whole = ds.load_full(0)
    assert whole.shape == (2, ds.num_frames(0)) == (2, 32000)
    for _ in range(5):
        crop = ds[0]["audio"]
        starts = torch.nonzero((whole[0, :24001] - crop[0, 0]).abs() < 1e-5).flatten().tolist()
        assert any(float((crop - whole[:, o: o + 8000]).abs().max()) < 1e-5 for o in starts)


def test_crops_are_seeded(tmp_path):
    _ramp(tmp_path / "ramp.wav", 5.0)

    def draws(seed):
        torch.manual_seed(0)
        ds = AudioFolderDataset(tmp_path, SR, 2, 1.0, seed=seed, skip_silent=False)
        return [float(ds[0]["audio"][0, 0]) for _ in range(5)]

    assert draws(0) == draws(0)
    assert draws(0) != draws(1)


def test_files_failing_at_read_time_are_skipped(tmp_path, write_tone):
    for i in range(3):
        write_tone(tmp_path / f"f{i}.wav", freq=300.0 + 100 * i)
    ds = AudioFolderDataset(tmp_path, SR, 2, 1.0)
    (tmp_path / "f1.wav").write_bytes(b"\x00" * 50)  # broken after the scan
    for _ in range(5):
        item = ds[1]
        assert not item["path"].endswith("f1.wav")
    assert ds.skipped["unreadable"] >= 5
    for p in tmp_path.glob("*.wav"):
        p.unlink()
    with pytest.raises(RuntimeError, match="failed to load"):
        ds[0]


def test_dataloader_batches(tmp_path, write_tone):
    for i in range(4):
        write_tone(tmp_path / f"f{i}.wav", seconds=0.5 + 0.5 * i, channels=2)
    (tmp_path / "f0.json").write_text(json.dumps({"caption": "sidecar prompt"}))
    ds = AudioFolderDataset(tmp_path, SR, 2, 1.0, prompt_builder=PromptBuilder(caption_prob=1.0), random_crop=False)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert batch["audio"].shape == (4, 2, SR) and batch["padding_mask"].shape == (4, SR)
    assert batch["padding_mask"].sum(1).tolist() == [8000, 16000, 16000, 16000]
    assert [m["seconds_total"] for m in batch["metadata"]] == [1.0, 1.0, 2.0, 2.0]
    assert batch["metadata"][0]["prompt"] == "sidecar prompt"
    # the file's metadata fields ride along (conditioners read theirs by name); the item's own keys win
    assert set(batch["metadata"][0]) == {"caption", "prompt", "seconds_start", "seconds_total", "path"}
    assert set(batch["metadata"][1]) == {"prompt", "seconds_start", "seconds_total", "path"}


def test_collate_errors():
    item = {"audio": torch.zeros(2, 10), "padding_mask": torch.ones(10, dtype=torch.bool), "prompt": ""}
    with pytest.raises(ValueError, match="empty"):
        collate([])
    with pytest.raises(ValueError, match="shape"):
        collate([item, {**item, "audio": torch.zeros(2, 11), "padding_mask": torch.ones(11, dtype=torch.bool)}])
    with pytest.raises(ValueError, match="exactly one"):
        collate([{"prompt": "x"}])


class _StrictHandler:
    """A log handler writing UTF-8 strictly (as a log file does); records what it could not write."""

    def __init__(self):
        import io
        import logging

        self.failed: list = []
        self.stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict")
        outer = self

        class Handler(logging.StreamHandler):
            def handleError(self, record):  # noqa: N802 - logging API
                outer.failed.append(record)

        self.handler = Handler(self.stream)

    def __enter__(self):
        import logging

        logging.getLogger("musicdiff").addHandler(self.handler)
        return self

    def __exit__(self, *exc):
        import logging

        logging.getLogger("musicdiff").removeHandler(self.handler)
        self.stream.flush()
        self.text = self.stream.buffer.getvalue().decode("utf-8")


def test_broken_sidecar_is_a_counted_warning_not_an_empty_prompt(tmp_path, write_tone, caplog):
    """Issue 13: `{"caption": "x",}` used to be ignored and the prompt silently became empty."""
    write_tone(tmp_path / "good.wav")
    (tmp_path / "good.json").write_text(json.dumps({"caption": "warm pads"}))
    write_tone(tmp_path / "broken.wav")
    (tmp_path / "broken.json").write_text('{"caption": "calm piano",}')
    write_tone(tmp_path / "plain.wav")  # no sidecar at all: fine, no caption
    with caplog.at_level("WARNING", logger="musicdiff.data"):
        ds = AudioFolderDataset(tmp_path, SR, 1, 0.5, prompt_builder=PromptBuilder(caption_prob=1.0))
    assert [p.name for p in ds.files] == ["good.wav", "plain.wav"] and ds.skipped == {"bad_metadata": 1}
    assert any("broken.json: invalid JSON sidecar" in r.getMessage() for r in caplog.records)
    assert ds[0]["prompt"] == "warm pads" and ds[1]["prompt"] == ""


def test_non_utf8_file_names_are_read(tmp_path, write_tone):
    """Issue 13: a Latin-1 file name was skipped as "unreadable" with a logging traceback."""
    import os

    write_tone(tmp_path / "x.wav", freq=440.0)
    os.rename(tmp_path / "x.wav", os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav"))
    with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.json"), "w") as fh:
        fh.write(json.dumps({"caption": "latin-1 name"}))
    with open(os.path.join(os.fsencode(tmp_path), b"bad\xff.wav"), "wb") as fh:
        fh.write(b"garbage" * 100)  # unreadable: its skip warning must print
    with _StrictHandler() as log:
        ds = AudioFolderDataset(tmp_path, SR, 1, 0.5, prompt_builder=PromptBuilder(caption_prob=1.0))
    assert len(ds) == 1 and ds.skipped == {"unreadable": 1} and not log.failed
    assert "bad\\xff.wav: unreadable" in log.text
    item = ds[0]
    assert item["prompt"] == "latin-1 name" and 400 < dominant_frequency(item["audio"][0], SR) < 480
    assert os.fsencode(ds.relpath(0)) == b"caf\xe9.wav"
