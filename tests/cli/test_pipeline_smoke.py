"""The whole tiny pipeline through the entry-point functions: train AE → encode → train DiT →
generate → evaluate → sweep, on CPU in well under a minute (a few steps each)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicdiff.training.checkpoint import list_checkpoints


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from tests.conftest import compose_root

    root = tmp_path_factory.mktemp("pipeline")
    common = [f"paths.log_dir={root / 'outputs'}", "trainer.progress=false"]
    out = {"root": root}

    from musicdiff.cli.train import train

    ae_cfg = compose_root("train", ["experiment=tiny_autoencoder", "trainer.max_steps=4", "trainer.batch_size=2",
                                    "trainer.checkpoint_every=2", "dataset.num_items=6",
                                    f"paths.output_dir={root / 'ae'}", *common])
    out["ae_metrics"] = train(ae_cfg)

    from musicdiff.cli.encode import encode

    enc_cfg = compose_root("encode", [f"autoencoder_from={root / 'ae' / 'export'}", "dataset.num_items=6",
                                      f"paths.output_dir={root / 'latents'}", f"paths.log_dir={root / 'outputs'}"])
    out["encode"] = encode(enc_cfg)

    dit_cfg = compose_root("train", ["experiment=tiny", "dataset=latents", f"dataset.root={root / 'latents' / 'latents'}",
                                     "dataset.window_seconds=1.0", f"autoencoder_from={root / 'ae' / 'export'}",
                                     "trainer.max_steps=4", "trainer.batch_size=2", f"paths.output_dir={root / 'dit'}",
                                     *common])
    out["dit_metrics"] = train(dit_cfg)

    from musicdiff.cli.generate import generate

    prompts = root / "prompts.csv"
    prompts.write_text("prompt,duration,seed\nsine playing C4 at 120 bpm panned left,0.5,3\nsaw playing E4,1.0,\n")
    gen_cfg = compose_root("generate", [f"checkpoint={root / 'dit' / 'export'}", f"prompts_file={prompts}",
                                        "sampler=dpmpp_2m", "sampler.steps=4", f"paths.output_dir={root / 'gen'}",
                                        f"paths.log_dir={root / 'outputs'}", "spectrograms=true"])
    out["generated"] = generate(gen_cfg)
    out["gen_cfg"] = gen_cfg
    return out


def test_autoencoder_stage(pipeline):
    root = pipeline["root"]
    assert (root / "ae" / "export" / "autoencoder.safetensors").is_file()
    assert (root / "ae" / "config.yaml").is_file() and (root / "ae" / "config_hash.txt").is_file()
    assert [p.name for p in list_checkpoints(root / "ae" / "checkpoints")] == ["step_00000002", "step_00000004"]
    assert pipeline["ae_metrics"]["step"] == 4


def test_encode_stage(pipeline):
    assert pipeline["encode"]["items"] == 6
    index = json.loads((pipeline["root"] / "latents" / "latents" / "index.json").read_text())
    assert index["latent_dim"] == 16


def test_dit_stage(pipeline):
    root = pipeline["root"]
    assert (root / "dit" / "export" / "dit.safetensors").is_file()
    assert pipeline["dit_metrics"]["loss"] > 0


def test_generate_stage(pipeline):
    paths = pipeline["generated"]
    assert len(paths) == 2
    data, sr = sf.read(paths[0])
    assert sr == 16000 and data.shape == (8000, 2)
    assert sf.read(paths[1])[0].shape == (16000, 2)
    info = sf.SoundFile(paths[0])
    meta = json.loads(info.comment)
    assert meta["seed"] == 3 and meta["prompt"].startswith("sine")
    assert paths[0].with_suffix(".png").is_file()
    lines = (paths[0].parent / "generations.jsonl").read_text().splitlines()
    assert len(lines) == 2


def test_generate_is_deterministic_per_seed(pipeline, tmp_path):
    from musicdiff.cli.generate import generate
    from tests.conftest import compose_root

    cfg = pipeline["gen_cfg"].copy()
    cfg.paths.output_dir = str(tmp_path / "again")
    again = generate(cfg)
    a, _ = sf.read(pipeline["generated"][0])
    b, _ = sf.read(again[0])
    assert (a == b).all()
    cfg.paths.output_dir = str(tmp_path / "bf16")
    cfg.generator.precision = "bf16"  # autocast DiT: runs through the CLI, close to but not equal to fp32
    c, _ = sf.read(generate(cfg)[0])
    assert c.shape == a.shape and np.isfinite(c).all() and not (c == a).all()


def test_generate_errors_are_clear(pipeline, tmp_path):
    from musicdiff.cli.generate import generate
    from musicdiff.training.checkpoint import CheckpointError
    from tests.conftest import compose_root

    root = pipeline["root"]
    base = [f"paths.output_dir={tmp_path}", f"paths.log_dir={tmp_path}", "logger=none"]
    with pytest.raises(CheckpointError, match="not found"):
        generate(compose_root("generate", ["checkpoint=/nonexistent/export", "prompt=x", *base]))
    with pytest.raises(ValueError, match="precision must be one of"):
        generate(compose_root("generate", [f"checkpoint={root / 'dit' / 'export'}", "prompt=x", "generator.precision=fp64",
                                           *base]))
    with pytest.raises(ValueError, match="maximum duration"):
        generate(compose_root("generate", [f"checkpoint={root / 'dit' / 'export'}", "prompt=x", "duration=60", *base]))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not audio")
    from musicdiff.data.audio_io import AudioLoadError

    with pytest.raises(AudioLoadError):
        generate(compose_root("generate", [f"checkpoint={root / 'dit' / 'export'}", "prompt=x", f"init_audio={bad}",
                                           "init_noise_level=1.0", *base]))


def test_audio_to_audio_and_inpainting(pipeline, tmp_path):
    from musicdiff.cli.generate import generate
    from tests.conftest import compose_root

    root = pipeline["root"]
    init = pipeline["generated"][1]
    base = [f"checkpoint={root / 'dit' / 'export'}", "prompt=sine", "sampler=dpmpp_2m", "sampler.steps=3",
            "logger=none", f"paths.log_dir={tmp_path}", "duration=1.0"]
    a2a = generate(compose_root("generate", [*base, f"init_audio={init}", "init_noise_level=0.5",
                                             f"paths.output_dir={tmp_path / 'a2a'}"]))
    inp = generate(compose_root("generate", [*base, f"inpaint_audio={init}", "inpaint_keep=[[0,0.5]]",
                                             f"paths.output_dir={tmp_path / 'inp'}"]))
    assert sf.read(a2a[0])[0].shape == (16000, 2) and sf.read(inp[0])[0].shape == (16000, 2)


def test_evaluate_stage(pipeline, tmp_path):
    from musicdiff.cli.evaluate import evaluate
    from tests.conftest import compose_root

    root = pipeline["root"]
    ref = next((root / "outputs" / "data" / "synthetic").iterdir())
    cfg = compose_root("evaluate", [f"generated_dir={pipeline['generated'][0].parent}", f"reference_dir={ref}",
                                    f"paths.output_dir={tmp_path}", f"paths.log_dir={root / 'outputs'}"])
    results = evaluate(cfg)  # the default suite: the real music model musicnn (metrics=musicnn)
    assert results["fd_musicnn"] > 0 and results["kl_pooled_musicnn"] > 0 and "fd_melstats" not in results
    assert json.loads((tmp_path / "metrics.json").read_text())["fd_musicnn"] == results["fd_musicnn"]


def test_sweep_runs_trials_as_child_runs_and_resumes(pipeline, tmp_path):
    from mlflow.tracking import MlflowClient

    from musicdiff.cli.sweep import sweep
    from tests.conftest import compose_root

    root = pipeline["root"]
    ref = next((root / "outputs" / "data" / "synthetic").iterdir())
    store = tmp_path / "store"
    over = [f"checkpoint={root / 'dit' / 'export'}", f"paths.log_dir={store}", "n_trials=2",
            "search_space={sampler.cfg_scale: {type: float, low: 1.0, high: 5.0}, "
            "sampler.steps: {type: int, low: 2, high: 4}}",
            "base_overrides=['prompt=sine','num_samples=3','duration=0.5','sampler=euler']", f"eval_overrides=['reference_dir={ref}']"]
    best = sweep(compose_root("sweep", [*over, f"paths.output_dir={tmp_path / 'sweep1'}"]))
    assert best > 0
    # resuming with a larger budget runs only the missing trials
    best_of_3 = sweep(compose_root("sweep", [*over[:2], "n_trials=3", *over[3:], f"paths.output_dir={tmp_path / 'sweep2'}"]))
    assert best_of_3 <= best
    import optuna

    study = optuna.load_study(study_name="guidance_steps", storage=f"sqlite:///{store / 'optuna.db'}")
    assert len([t for t in study.trials if t.value is not None]) == 3
    client = MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name("musicdiff")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(children) == 3
    # the default objective is FD on the real music model (eval_metrics=musicnn), KL_musicnn beside it
    assert all(r.data.metrics["fd_musicnn"] > 0 and "kl_pooled_musicnn" in r.data.metrics for r in children)
    assert best_of_3 == min(r.data.metrics["fd_musicnn"] for r in children)


def test_console_script_runs_as_documented(tmp_path):
    """`musicdiff-train ... debug=fast` as a real process (Hydra app, run dir, exit code)."""
    exe = Path(sys.executable).with_name("musicdiff-train")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "musicdiff.train"]
    proc = subprocess.run([*cmd, "experiment=tiny", "debug=fast", "logger=none", "trainer.batch_size=2",
                           "dataset.num_items=4", f"paths.log_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "export" / "dit.safetensors").is_file()
    bad = subprocess.run([*cmd, "dit.widht=3", f"paths.log_dir={tmp_path}"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "widht" in bad.stderr
