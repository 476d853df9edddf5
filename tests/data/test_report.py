"""Data report (musicdiff.data.report): measurements and warnings on deliberately bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicdiff.data.prompts import PromptBuilder
from musicdiff.data.report import analyse_file, data_report, format_table, main, write_report

SR = 44100


def music(seconds: float = 2.0, channels: int = 2, amp: float = 0.3, seed: int = 0) -> np.ndarray:
    """A chord with decaying notes and a little noise, different per channel: a stand-in for a clean master."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    env = np.exp(-3 * (t % 0.5))
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    chans = [amp * env * chord * (1.0 - 0.2 * c) + 0.01 * rng.standard_normal(len(t)) for c in range(channels)]
    return np.stack(chans, axis=1).astype(np.float32)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """One clean file and one of each problem the report must flag; a manifest for some of them."""
    root = tmp_path / "music"
    root.mkdir()
    sf.write(root / "clean.wav", music(), SR, subtype="PCM_16")
    clipped = np.clip(music(amp=3.0), -1.0, 1.0)  # a hot master limited by hard clipping
    sf.write(root / "clipped.wav", clipped, SR, subtype="PCM_16")
    sf.write(root / "dc.wav", music() + 0.05, SR, subtype="PCM_16")
    sf.write(root / "quiet.wav", music(amp=0.0005) * 0.01, SR, subtype="FLOAT")
    sf.write(root / "mono.wav", music(channels=1), SR, subtype="PCM_16")
    sf.write(root / "lowrate.wav", music()[::2], SR // 2, subtype="PCM_16")
    gap = music(seconds=4.0)
    gap[int(0.5 * SR):] = 0.0  # 0.5 s of music then silence
    sf.write(root / "gappy.wav", gap, SR, subtype="PCM_16")
    (root / "broken.wav").write_bytes(b"RIFF not really a wave file")
    manifest = [{"path": "clean.wav", "caption": "calm piano chords", "genre": "ambient", "bpm": 120},
                {"path": "clipped.wav", "genre": "edm", "moods": ["loud"]},
                {"path": "dc.wav", "caption": "a chord with an offset"}]
    (root / "metadata.json").write_text(json.dumps(manifest))
    return root


def by_path(report: dict) -> dict[str, dict]:
    return {r["path"]: r for r in report["files"]}


def test_measurements_and_warnings_on_bad_files(folder: Path) -> None:
    report = data_report(folder, sample_rate=SR, channels=2)
    files = by_path(report)
    assert set(files) == {"clean.wav", "clipped.wav", "dc.wav", "quiet.wav", "mono.wav", "lowrate.wav", "gappy.wav",
                          "broken.wav"}
    clean = files["clean.wav"]
    assert clean["warnings"] == [], clean["warnings"]
    assert clean["sample_rate"] == SR and clean["channels"] == 2 and clean["seconds"] == pytest.approx(2.0)
    assert -30 < clean["lufs"] < -10 and clean["clip_share"] == 0.0 and clean["silence_share"] == 0.0
    assert clean["caption"] is True
    # each bad file gets exactly the warning for its problem (and its measurement shows it)
    assert files["clipped.wav"]["clip_share"] > 0.05
    assert any("clipped master" in w for w in files["clipped.wav"]["warnings"])
    assert files["dc.wav"]["dc_offset"] == pytest.approx(0.05, abs=0.005)
    assert [w for w in files["dc.wav"]["warnings"] if "DC offset" in w]
    assert files["quiet.wav"]["lufs"] < -45 and any("near-silent" in w for w in files["quiet.wav"]["warnings"])
    assert any("mono file in a stereo model" in w for w in files["mono.wav"]["warnings"])
    assert any("22050 Hz below the model's 44100 Hz" in w for w in files["lowrate.wav"]["warnings"])
    assert files["gappy.wav"]["silence_share"] == pytest.approx(0.875, abs=0.02)
    assert any("mostly silent" in w for w in files["gappy.wav"]["warnings"])
    assert any(w.startswith("unreadable") for w in files["broken.wav"]["warnings"])
    for name in ("clipped.wav", "dc.wav", "quiet.wav", "mono.wav", "lowrate.wav", "gappy.wav"):
        assert not any("clipped master" in w for w in files[name]["warnings"]) or name == "clipped.wav", name
    # the flat list names each file once per problem
    assert sum(w.startswith("dc.wav: ") for w in report["warnings"]) == 1
    # no metadata -> empty prompt warning; metadata without caption still yields prompts
    assert any("empty prompt" in w for w in files["mono.wav"]["warnings"])
    assert files["clipped.wav"]["caption"] is False and all(files["clipped.wav"]["prompts"])
    summary = report["summary"]
    assert summary["files"] == 8 and summary["caption_coverage"] == pytest.approx(2 / 8)
    assert summary["prompt_coverage"] == pytest.approx(3 / 8)
    assert summary["clipped_files"] == 1 and summary["mono_files"] == 1


def test_prompts_come_from_the_prompt_builder(folder: Path) -> None:
    builder = PromptBuilder(caption_prob=1.0)
    report = data_report(folder, prompt_builder=builder, prompts_per_file=3)
    assert by_path(report)["clean.wav"]["prompts"] == ["calm piano chords"] * 3
    fields_only = by_path(report)["clipped.wav"]["prompts"]
    assert all(("edm" in p.lower()) or ("loud" in p.lower()) for p in fields_only)


def test_stereo_check_off_without_model_channels(folder: Path) -> None:
    """Without the model's layout the report cannot call a mono file wrong."""
    assert not any("mono" in w for w in analyse_file(folder / "mono.wav").warnings)


class RecordingLogger:
    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.artifacts: list[tuple[str, str | None]] = []

    def log_metrics(self, metrics, step) -> None:
        self.metrics.update(metrics)

    def log_artifact(self, path, artifact_path=None) -> None:
        assert Path(path).is_file()
        self.artifacts.append((Path(path).name, artifact_path))


def test_written_table_json_and_logged_summary(folder: Path, tmp_path: Path) -> None:
    report = data_report(folder, sample_rate=SR, channels=2)
    logger = RecordingLogger()
    md = write_report(report, tmp_path / "out", logger)
    text = md.read_text()
    assert text.startswith("| file | s | Hz | ch | LUFS |") and "| clean.wav | 2.0 | 44100 | 2 |" in text
    assert "- dc.wav: DC offset" in text and "Example prompts:" in text
    assert json.loads((tmp_path / "out" / "report.json").read_text())["summary"]["files"] == 8
    assert logger.metrics["data/files"] == 8 and logger.metrics["data/clipped_files"] == 1
    assert ("report.md", "data_report") in logger.artifacts and ("report.json", "data_report") in logger.artifacts
    assert not list((tmp_path / "out").glob(".*.tmp"))
    assert format_table(report) == text


def test_command_line(folder: Path, tmp_path: Path, capsys, caplog) -> None:
    assert main([str(folder), "--sample-rate", str(SR), "--channels", "2", "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "| mono.wav |" in out and (tmp_path / "cli" / "report.md").is_file()
    assert any("quiet.wav: near-silent file" in r.getMessage() for r in caplog.records)


def test_missing_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope is not a folder"):
        data_report(tmp_path / "nope")
