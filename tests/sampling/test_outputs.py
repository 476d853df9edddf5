"""GenerationWriter: clips with their request in the file metadata, one manifest record each."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
import torch

from musicdiff.sampling.outputs import GENERATIONS_MANIFEST, GenerationWriter
from musicdiff.sampling.requests import GenerationRequest


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_writes_clips_metadata_and_manifest(tmp_path, fmt):
    audio = 0.5 * torch.sin(torch.linspace(0, 200, 800)).repeat(2, 1)
    req = GenerationRequest("warm pads", duration=0.1, seed=7, negative_prompt="noise")
    with GenerationWriter(tmp_path / "out", 8000, fmt, digest="abc", append=False) as w:
        path = w.write("00000_seed7", audio, req, split="in_distribution")
    assert path == tmp_path / "out" / f"00000_seed7.{fmt}"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, GENERATIONS_MANIFEST])  # no temp file
    data, sr = sf.read(path, always_2d=True)
    assert sr == 8000 and data.shape == (800, 2)
    assert abs(data[:, 0] - audio[0].numpy()).max() < 1e-3  # 16-bit PCM
    with sf.SoundFile(path) as fh:
        assert fh.title == "warm pads"
        assert json.loads(fh.comment) == {"prompt": "warm pads", "seed": 7, "duration": 0.1,
                                          "negative_prompt": "noise", "config_hash": "abc"}
    record = json.loads((tmp_path / "out" / GENERATIONS_MANIFEST).read_text())
    assert record == {"path": path.name, "prompt": "warm pads", "seed": 7, "duration": 0.1,
                      "split": "in_distribution", "config_hash": "abc"}


def test_append_overwrite_and_errors(tmp_path):
    audio = torch.zeros(1, 10)
    req = GenerationRequest("x", seed=1)
    for append, expected in ((True, 1), (True, 2), (False, 1)):
        with GenerationWriter(tmp_path, 10, "wav", append=append) as w:
            w.write("a", audio, req)
        assert len((tmp_path / GENERATIONS_MANIFEST).read_text().splitlines()) == expected
    with pytest.raises(ValueError, match="format must be one of"):
        GenerationWriter(tmp_path, 10, "mp3")
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        GenerationWriter(tmp_path, 10).write("b", audio, req)
