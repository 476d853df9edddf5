"""evaluate_folders: any folder of audio against references and prompts, with the shipped configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.evaluation import FrechetDistance, MelStatsEmbedder, MetricSuite, evaluate_folders, read_prompts

CONF = Path(__file__).resolve().parents[2] / "conf" / "metrics"


def _write_set(folder: Path, freqs, sr: int = 22050, seconds: float = 0.5, noise: float = 0.0, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    for i, f in enumerate(freqs):
        x = 0.4 * np.sin(2 * np.pi * f * t) + noise * rng.standard_normal(t.shape)
        sf.write(folder / f"{i:03d}.wav", np.stack([x, 0.5 * x], 1).astype(np.float32), sr)


def test_proxies_config_scores_identical_and_different_folders(tmp_path):
    suite = instantiate(OmegaConf.load(CONF / "proxies.yaml"))
    freqs = [220, 277, 330, 392, 440, 523]
    _write_set(tmp_path / "ref", freqs)
    _write_set(tmp_path / "same", freqs, sr=44100)  # another system's sample rate: resampled on load
    _write_set(tmp_path / "other", freqs, noise=0.3, seed=1)
    same = evaluate_folders(tmp_path / "same", tmp_path / "ref", metrics=suite)
    other = evaluate_folders(tmp_path / "other", tmp_path / "ref", metrics=suite)
    assert set(same) >= {"fd_melstats", "kl_randconv", "kl_pooled_randconv", "num_generated", "num_skipped_files"}
    assert same["num_generated"] == 6 and same["num_reference"] == 6
    assert same["fd_melstats"] < 0.05 * other["fd_melstats"]
    assert same["kl_randconv"] < 0.05 * other["kl_randconv"] + 1e-6


def test_bad_files_are_skipped_and_missing_inputs_handled(tmp_path, caplog):
    _write_set(tmp_path / "gen", [220, 330, 440])
    (tmp_path / "gen" / "broken.wav").write_bytes(b"RIFF not really a wav")
    metrics = [FrechetDistance(MelStatsEmbedder(n_mels=16))]
    with pytest.raises(ValueError, match="needs reference"):
        evaluate_folders(tmp_path / "gen", metrics=metrics, strict=True)
    out = evaluate_folders(tmp_path / "gen", metrics=metrics)  # non-strict: skipped with a warning
    assert "fd" not in out and out["num_skipped_files"] == 1 and out["num_generated"] == 3
    with pytest.raises(FileNotFoundError, match="not found"):
        evaluate_folders(tmp_path / "nope", metrics=metrics)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no readable audio"):
        evaluate_folders(tmp_path / "empty", metrics=metrics)
    with pytest.raises(ValueError, match="no metrics"):
        evaluate_folders(tmp_path / "gen", metrics=[])


def test_read_prompts_formats(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"a.wav": "piano", "b": {"caption": "drums"}}))
    (tmp_path / "p.jsonl").write_text('{"path": "a.wav", "prompt": "piano"}\n{"id": "b", "text": "drums"}\n')
    (tmp_path / "p.csv").write_text("name,caption\na.wav,piano\nb,drums\n")
    (tmp_path / "p.txt").write_text("a.wav\tpiano\nb\tdrums\n")
    for name in ("p.json", "p.jsonl", "p.csv", "p.txt"):
        assert read_prompts(tmp_path / name) == {"a.wav": "piano", "b": "drums"}, name
    (tmp_path / "bad.jsonl").write_text('{"path": "a.wav"}\n')
    with pytest.raises(ValueError, match="prompt"):
        read_prompts(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError):
        read_prompts(tmp_path / "missing.json")


def test_clap_config_with_tiny_local_model(tmp_path, tiny_clap_dir, monkeypatch):
    monkeypatch.setenv("MUSICDIFF_CLAP_PATH", tiny_clap_dir)
    suite = instantiate(OmegaConf.load(CONF / "clap.yaml"))
    assert isinstance(suite, MetricSuite) and len(suite) == 3
    _write_set(tmp_path / "ref", [220, 330, 440, 550])
    _write_set(tmp_path / "gen", [220, 330, 440, 550], noise=0.05)
    prompts = {f"{i:03d}": p for i, p in enumerate(["a happy piano melody", "sad violin", "ambient pads", "rock"])}
    out = evaluate_folders(tmp_path / "gen", tmp_path / "ref", prompts=prompts, metrics=suite)
    assert np.isfinite(out["fd_clap"]) and out["fd_clap"] >= 0
    assert -1.0 <= out["clap_score"] <= 1.0
    assert out["kl_clap_tags"] >= 0
