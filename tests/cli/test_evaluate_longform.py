"""`musicdiff-evaluate metrics=longform_clap` (the `longform` suite plus a CLAP model) logs the per-window
metrics as MLflow curves (one point per window, ``step`` = window index) and a plot of them, read back
from the local MLflow store (an sqlite file under ``paths.log_dir``, the project's default). The CLAP
model is a tiny random one built locally; the prompts come from the folder's ``generations.jsonl``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import compose_root
from tests.evaluation.conftest import make_clap_with_processor
from tests.evaluation.musicnn_clips import SR, musicnn_clips


def test_longform_curves_in_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    from musicdiff.cli.evaluate import evaluate

    clips = musicnn_clips()
    chord, drums = clips["chord"][:96000], clips["drums"][:96000]  # two 3 s musicnn windows each
    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir(), ref.mkdir()
    for i in range(2):  # 12 s tracks that turn from the reference's chord into drums half-way: 4 windows
        sf.write(gen / f"track_{i}.wav", np.concatenate([np.roll(chord, 4000 * i), np.roll(drums, 4000 * i)]), SR)
        sf.write(ref / f"track_{i}.wav", np.roll(chord, 3000 * i), SR)
    prompts = ["a happy piano melody", "sad violin with drums"]
    (gen / "generations.jsonl").write_text("".join(json.dumps({"path": f"track_{i}.wav", "prompt": p}) + "\n"
                                                   for i, p in enumerate(prompts)))
    clap = make_clap_with_processor(tmp_path / "clap")
    store = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    results = evaluate(compose_root("evaluate", [
        "metrics=longform_clap", f"metrics.metrics.longform.clap.path={clap}", f"generated_dir={gen}",
        f"reference_dir={ref}",
        f"paths.output_dir={run_dir}", f"paths.log_dir={tmp_path / 'outputs'}"]))
    assert json.loads((run_dir / "metrics.json").read_text()) == pytest.approx(results)

    client = MlflowClient(tracking_uri=store)
    [run] = client.search_runs([client.get_experiment_by_name("musicdiff").experiment_id])
    for curve in ("longform_fd", "longform_repetition", "longform_clap"):
        history = sorted(client.get_metric_history(run.info.run_id, f"eval/{curve}_by_window"), key=lambda m: m.step)
        assert [m.step for m in history] == [0, 1, 2, 3], curve  # one point per window
        assert [m.value for m in history] == pytest.approx([results[f"{curve}_w{k}"] for k in range(4)])
    fd = [results[f"longform_fd_w{k}"] for k in range(4)]
    assert min(fd[2:]) > 3 * max(fd[:2])  # the drum half is far from the chord reference
    clap_w = [results[f"longform_clap_w{k}"] for k in range(4)]
    assert all(-1 <= c <= 1 for c in clap_w) and abs(clap_w[2] - clap_w[0]) > 1e-4  # drums score differently
    assert "longform_curves.png" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert (run_dir / "longform_curves.png").read_bytes()[:4] == b"\x89PNG"
