"""Sidecar manifests: JSON list/object, JSONL and CSV give the same mapping; clear errors."""

from __future__ import annotations

import json

import pytest

from musicdiff.data.manifest import (
    MetadataError, find_manifest, normalize_relpath, read_manifest, sidecar_metadata,
)

ENTRIES = [
    {"path": "./a/one.wav", "caption": "calm piano", "genre": "ambient", "bpm": "90"},
    {"path": "two.flac", "caption": "", "mood": "happy", "bpm": "120"},
]
EXPECTED = {"a/one.wav": {"caption": "calm piano", "genre": "ambient", "bpm": "90"},
            "two.flac": {"mood": "happy", "bpm": "120"}}


def test_all_layouts_agree(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps(ENTRIES))
    (tmp_path / "o.json").write_text(json.dumps({e["path"]: {k: v for k, v in e.items() if k != "path"}
                                                 for e in ENTRIES}))
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(e) for e in ENTRIES) + "\n\n")
    (tmp_path / "m.csv").write_text("file,caption,genre,mood,bpm\n./a/one.wav,calm piano,ambient,,90\n"
                                    "two.flac,,,happy,120\n")
    for name in ("m.json", "o.json", "m.jsonl", "m.csv"):
        assert read_manifest(tmp_path / name) == EXPECTED, name


def test_caption_string_values_and_find(tmp_path):
    (tmp_path / "metadata.json").write_text(json.dumps({"x.wav": "a caption"}))
    found = find_manifest(tmp_path)
    assert found == tmp_path / "metadata.json"
    assert read_manifest(found) == {"x.wav": {"caption": "a caption"}}
    assert find_manifest(tmp_path / "nowhere") is None
    assert normalize_relpath("./sub\\dir/x.wav") == "sub/dir/x.wav"


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        read_manifest(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("[{\"caption\": \"no path\"}]")
    with pytest.raises(ValueError, match="no path key"):
        read_manifest(tmp_path / "bad.json")
    (tmp_path / "bad.csv").write_text("caption,genre\nx,y\n")
    with pytest.raises(ValueError, match="path column"):
        read_manifest(tmp_path / "bad.csv")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        read_manifest(tmp_path / "broken.json")
    (tmp_path / "m.yaml").write_text("a: 1")
    with pytest.raises(ValueError, match="unknown manifest type"):
        read_manifest(tmp_path / "m.yaml")


def test_sidecar(tmp_path):
    (tmp_path / "song.json").write_text(json.dumps({"caption": "sidecar caption", "genre": None}))
    assert sidecar_metadata(tmp_path / "song.wav") == {"caption": "sidecar caption"}
    assert sidecar_metadata(tmp_path / "none.wav") == {}
    # a broken sidecar is an error naming it (it used to become an empty prompt without a word)
    (tmp_path / "junk.json").write_text("{")
    with pytest.raises(MetadataError, match=r"junk\.json: invalid JSON sidecar"):
        sidecar_metadata(tmp_path / "junk.wav")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(MetadataError, match=r"list\.json: sidecar must hold a JSON object"):
        sidecar_metadata(tmp_path / "list.wav")
    (tmp_path / "latin1.json").write_bytes(b'{"caption": "caf\xe9"}')
    with pytest.raises(MetadataError, match=r"latin1\.json: unreadable sidecar"):
        sidecar_metadata(tmp_path / "latin1.wav")
