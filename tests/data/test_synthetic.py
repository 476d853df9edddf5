"""Synthetic music: byte-identical per seed, pitch/pan/tempo match the manifest, cached dataset."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from musicdiff.data.synthetic import (
    INSTRUMENTS, NOTES, PANS, TEMPOS, SyntheticDataset, generate_synthetic_dataset, note_frequency,
)
from tests.data.helpers import dominant_frequency

SR = 16000


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_byte_identical_per_seed(tmp_path):
    generate_synthetic_dataset(tmp_path / "a", 6, SR, 1.0, seed=3)
    generate_synthetic_dataset(tmp_path / "b", 6, SR, 1.0, seed=3)
    generate_synthetic_dataset(tmp_path / "c", 6, SR, 1.0, seed=4)
    a, b, c = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(a) == 7 and a == b
    assert a["metadata.json"] != c["metadata.json"]
    # an item does not depend on how many items are generated
    generate_synthetic_dataset(tmp_path / "d", 3, SR, 1.0, seed=3)
    assert _files(tmp_path / "d")["audio/item_00002.wav"] == a["audio/item_00002.wav"]


def test_items_match_their_manifest_fields(tmp_path):
    manifest = generate_synthetic_dataset(tmp_path, 40, SR, 1.0, seed=0, min_seconds=0.5)
    entries = json.loads(manifest.read_text())
    assert {e["instrument"] for e in entries} == set(INSTRUMENTS)
    assert {e["pan"] for e in entries} == set(PANS) and {e["bpm"] for e in entries} <= set(TEMPOS)
    assert {e["kind"] for e in entries} == {"note", "chord", "drums"}
    for e in entries:
        audio, sr = sf.read(str(tmp_path / e["path"]), dtype="float32")
        assert sr == SR and audio.shape == (int(round(e["seconds"] * SR)), 2)
        assert 0.5 <= e["seconds"] <= 1.0 and 0.45 < np.abs(audio).max() <= 0.5
        assert f"{e['bpm']} bpm" in e["caption"] and f"panned {e['pan']}" in e["caption"]
        left, right = float(np.sqrt((audio[:, 0] ** 2).mean())), float(np.sqrt((audio[:, 1] ** 2).mean()))
        if e["pan"] == "left":
            assert left > 2 * right
        elif e["pan"] == "right":
            assert right > 2 * left
        else:
            assert left == pytest.approx(right, rel=0.01)
        if e["kind"] == "drums":
            assert e["pitch"] is None and e["frequency"] is None and e["caption"].startswith("drum beat")
            continue
        assert e["pitch"] in NOTES and e["instrument"] in e["caption"] and e["pitch"] in e["caption"]
        assert e["frequency"] == pytest.approx(note_frequency(e["pitch"]), abs=0.01)
        assert dominant_frequency(audio.sum(1), SR) == pytest.approx(e["frequency"], rel=0.03)


def test_note_frequency():
    assert note_frequency("A4") == 440.0
    assert note_frequency("C4") == pytest.approx(261.63, abs=0.01)
    assert note_frequency("C4", 7) == pytest.approx(note_frequency("G4"))
    with pytest.raises(ValueError, match="note name"):
        note_frequency("H9x")


def test_synthetic_dataset_generates_once_and_serves_windows(tmp_path):
    ds = SyntheticDataset(SR, 2, window_seconds=0.5, num_items=8, seconds=1.0, min_item_seconds=0.4,
                          cache_dir=tmp_path, window_multiple=64)
    assert len(ds) == 8 and not ds.skipped
    marker = ds.root / "COMPLETE"
    stamp = (ds.root / "audio/item_00000.wav").stat().st_mtime_ns
    again = SyntheticDataset(SR, 2, window_seconds=0.5, num_items=8, seconds=1.0, min_item_seconds=0.4,
                             cache_dir=tmp_path, window_multiple=64)
    assert again.root == ds.root and marker.is_file()
    assert (ds.root / "audio/item_00000.wav").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [ds.root.name]  # no temp folders left
    item = ds[0]
    assert item["audio"].shape == (2, 8000) and item["seconds_total"] == 1.0
    assert re.search(r"(drum beat|playing) .*at \d+ bpm panned \w+", item["prompt"])
    mono = SyntheticDataset(SR, 1, window_seconds=0.5, num_items=2, seconds=0.5, cache_dir=tmp_path)
    assert mono[0]["audio"].shape == (1, 8000)
    with pytest.raises(ValueError, match="positive"):
        generate_synthetic_dataset(tmp_path / "x", 0, SR, 1.0)
