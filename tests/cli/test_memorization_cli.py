"""`musicdiff-memorization` end to end on tiny data: a planted copy of a training item ranks first
(summary JSON, HTML report, MLflow), the training embeddings are reused on a rerun, bad files are
skipped and counted, and the generate-from-checkpoint mode runs on a tiny random-weight export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.conftest import compose_root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A synthetic training folder (plus one corrupt file) and a tiny untrained model export."""
    import torch
    from hydra.utils import instantiate

    from musicdiff.data.synthetic import generate_synthetic_dataset
    from musicdiff.pretrained import write_export

    root = tmp_path_factory.mktemp("memorization")
    generate_synthetic_dataset(root / "train", num_items=10, sample_rate=16000, seconds=1.0, seed=0)
    (root / "train" / "audio" / "broken.wav").write_bytes(b"RIFF\x00\x00not really a wav file")
    cfg = compose_root("train", ["experiment=tiny", f"paths.output_dir={root / 'dit'}",
                                 f"paths.log_dir={root / 'outputs'}"])
    torch.manual_seed(0)
    modules = {g: instantiate(cfg[g]).eval() for g in ("autoencoder", "dit", "conditioner")}
    write_export(root / "export", modules, config=cfg)
    manifest = json.loads((root / "train" / "metadata.json").read_text())
    return {"root": root, "train": root / "train", "export": root / "export",
            "captions": {e["path"]: e["caption"] for e in manifest}}


RANDCONV = ("embedder=randconv", "embedder.n_mels=32", "embedder.dim=64")


def _cfg(tiny, run: str, *overrides: str, embedder=RANDCONV):
    root = tiny["root"]
    return compose_root("memorization", ["dataset=audio_dir", f"dataset.root={tiny['train']}", *embedder,
                                         f"paths.log_dir={root / 'outputs'}", f"paths.output_dir={root / run}",
                                         *overrides])


def _generated_folder(tiny):
    """Two unrelated clips, an exact copy of training item 3, and a corrupt file."""
    from musicdiff.data.synthetic import generate_synthetic_dataset

    root = tiny["root"]
    gen = root / "generated"
    generate_synthetic_dataset(root / "other", num_items=2, sample_rate=16000, seconds=1.0, seed=7)
    gen.mkdir()
    records = []
    for i, src in enumerate(sorted((root / "other" / "audio").glob("*.wav"))):
        shutil.copy(src, gen / f"ood_{i}.wav")
        records.append({"path": f"ood_{i}.wav", "prompt": f"unrelated prompt {i}", "split": "out_of_distribution"})
    shutil.copy(tiny["train"] / "audio" / "item_00003.wav", gen / "planted.wav")
    records.append({"path": "planted.wav", "prompt": tiny["captions"]["audio/item_00003.wav"]})  # split inferred
    (gen / "bad.wav").write_bytes(b"RIFF....garbage")
    (gen / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return gen


def test_planted_copy_ranks_first_with_cache_reuse_and_mlflow(tiny):
    from mlflow.tracking import MlflowClient

    from musicdiff.cli.memorization import memorize

    gen = _generated_folder(tiny)
    metrics = memorize(_cfg(tiny, "run1", f"generated_dir={gen}"))
    run = tiny["root"] / "run1"
    summary = json.loads((run / "summary.json").read_text())
    first = summary["top"][0]
    assert first["name"] == "planted.wav" and first["split"] == "in_distribution"
    assert first["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert first["neighbours"][0]["name"] == "audio/item_00003.wav"
    assert all(t["similarity"] < 0.9999 for t in summary["top"][1:])
    assert metrics["memorization/all/max_nn_similarity"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["memorization/in_distribution/num_generations"] == 1
    assert metrics["memorization/out_of_distribution/num_generations"] == 2
    # bad files: the corrupt training file is skipped by the dataset, the corrupt generation at embedding time
    assert summary["skipped"] == {"training": {"unreadable": 1}, "generated": {"unreadable": 1}}
    assert metrics["memorization/num_training_items"] == 10 and metrics["memorization/num_skipped_generated"] == 1
    assert metrics["memorization/embedding_cache_hit"] == 0
    # the report: rank 1 is the planted copy with similarity 1.0000 next to the training item it copies
    html = (run / "report" / "index.html").read_text()
    row = html[html.index('id="rank-1"'):html.index('id="rank-2"')]
    assert re.findall(r"<b>([^<]+)</b>", row)[:2] == ["planted.wav", "audio/item_00003.wav"]
    assert "1.0000" in row and html.count("<audio") == 3 * 4
    assert (run / "embeddings" / "train_embeddings.npy").is_file()
    assert (run / "embeddings" / "generation_embeddings.npy").is_file()

    # MLflow: metrics and the report artifact
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny['root'] / 'outputs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("musicdiff")
    [rec] = [r for r in client.search_runs([exp.experiment_id])
             if r.data.tags.get("musicdiff.run_dir") == str(run)]
    assert rec.info.status == "FINISHED" and rec.data.tags["musicdiff.entry_point"] == "memorization"
    assert rec.data.metrics["memorization/all/max_nn_similarity"] == pytest.approx(1.0, abs=1e-4)
    assert rec.data.metrics["memorization/num_skipped_generated"] == 1
    arts = {a.path for a in client.list_artifacts(rec.info.run_id)}
    assert {"summary.json", "memorization", "config.yaml"} <= arts
    assert "memorization/index.html" in {a.path for a in client.list_artifacts(rec.info.run_id, "memorization")}

    # the real music model's numbers (music_embedder=musicnn, the default) next to the randconv detector:
    # the planted copy is also nearest to item 3 in musicnn space; 3 generations vs 10 training items in
    # 200 dimensions -> the diagonal FD; KL of the pooled tag distributions
    import numpy as np

    assert first["musicnn"]["nearest"] == "audio/item_00003.wav"
    assert first["musicnn"]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["memorization/musicnn/in_distribution/max_nn_similarity"] == pytest.approx(1.0, abs=1e-4)
    assert metrics["memorization/musicnn/out_of_distribution/max_nn_similarity"] < 0.9999
    assert metrics["memorization/musicnn/fd"] > 0 and metrics["memorization/musicnn/fd_diagonal"] == 1
    assert metrics["memorization/musicnn/kl_pooled"] > 0 and metrics["memorization/musicnn/nn_agreement"] > 0
    assert rec.data.metrics["memorization/musicnn/fd"] == pytest.approx(metrics["memorization/musicnn/fd"])
    assert "memorization/musicnn/fd" in html and summary["metrics"]["memorization/musicnn/fd"] > 0
    train_names = [it["name"] for it in json.loads((run / "embeddings" / "train_items.json").read_text())["items"]]
    feats = np.load(run / "embeddings" / "train_musicnn_features.npy")
    gen_feats = np.load(run / "embeddings" / "generation_musicnn_features.npy")
    planted_row = [g["name"] for g in json.loads((run / "embeddings" / "musicnn_metrics.json").read_text())
                   ["generations"]].index("planted.wav")
    assert feats.shape == (10, 200)
    np.testing.assert_allclose(gen_feats[planted_row], feats[train_names.index("audio/item_00003.wav")], atol=1e-5)

    # a rerun with the same embedder + data reuses the cached training embeddings
    import numpy as np

    again = memorize(_cfg(tiny, "run2", f"generated_dir={gen}", "logger=none", "top_n=2"))
    assert again["memorization/embedding_cache_hit"] == 1
    assert metrics["memorization/musicnn/cache_hit"] == 0 and again["memorization/musicnn/cache_hit"] == 1
    assert np.array_equal(np.load(run / "embeddings" / "train_embeddings.npy"),
                          np.load(tiny["root"] / "run2" / "embeddings" / "train_embeddings.npy"))
    assert json.loads((tiny["root"] / "run2" / "summary.json").read_text())["top"][0]["name"] == "planted.wav"
    # ... and a different embedder config does not
    other = memorize(_cfg(tiny, "run3", f"generated_dir={gen}", "logger=none", "embedder.seed=1"))
    assert other["memorization/embedding_cache_hit"] == 0


def test_clap_embedder_config(tiny, tmp_path):
    """embedder=clap (SA2's embedder) through its config, with a tiny random-weight local CLAP."""
    from musicdiff.cli.memorization import memorize
    from tests.evaluation.conftest import make_clap_with_processor

    gen = tmp_path / "gen"
    gen.mkdir()
    shutil.copy(tiny["train"] / "audio" / "item_00005.wav", gen / "copy_of_5.wav")
    shutil.copy(tiny["train"] / "audio" / "item_00001.wav", gen / "copy_of_1.wav")
    clap = make_clap_with_processor(tmp_path / "clap")
    metrics = memorize(_cfg(tiny, "clap_run", f"generated_dir={gen}", "logger=none", "cache_dir=null",
                            embedder=("embedder=clap", f"embedder.path={clap}")))
    summary = json.loads((tiny["root"] / "clap_run" / "summary.json").read_text())
    assert {t["name"]: t["neighbours"][0]["name"] for t in summary["top"]} == {
        "copy_of_5.wav": "audio/item_00005.wav", "copy_of_1.wav": "audio/item_00001.wav"}
    assert metrics["memorization/all/mean_nn_similarity"] == pytest.approx(1.0, abs=1e-4)
    assert summary["top"][0]["split"] is None  # no manifest and no matching prompt: unlabelled


def test_generate_from_checkpoint(tiny):
    from musicdiff.cli.memorization import memorize

    ood = tiny["root"] / "ood.txt"
    ood.write_text("a violin sonata in a large hall\nlofi hip hop beat for studying\n")
    metrics = memorize(_cfg(tiny, "gen_run", f"checkpoint={tiny['export']}", f"ood_prompts_file={ood}",
                            "num_in_distribution=3", "sampler=euler", "sampler.steps=2", "duration=0.5",
                            "batch_size=3", "logger=none", "cache_dir=null"))
    run = tiny["root"] / "gen_run"
    records = [json.loads(line) for line in (run / "generated" / "generations.jsonl").read_text().splitlines()]
    assert [r["split"] for r in records] == ["in_distribution"] * 3 + ["out_of_distribution"] * 2
    assert {r["prompt"] for r in records[:3]} <= set(tiny["captions"].values())  # training captions
    assert [r["prompt"] for r in records[3:]] == ["a violin sonata in a large hall", "lofi hip hop beat for studying"]
    assert all(r["duration"] == pytest.approx(0.5) for r in records)
    assert metrics["memorization/in_distribution/num_generations"] == 3
    assert metrics["memorization/out_of_distribution/num_generations"] == 2
    summary = json.loads((run / "summary.json").read_text())
    assert len(summary["top"]) == 5 and summary["embedding_cache"]["hit"] is False
    assert all(len(t["neighbours"]) == 3 for t in summary["top"])
    assert (run / "report" / "index.html").is_file()


def test_needs_exactly_one_source(tiny):
    from musicdiff.cli.memorization import memorize

    with pytest.raises(ValueError, match="exactly one of checkpoint"):
        memorize(_cfg(tiny, "bad", "logger=none"))
    with pytest.raises(ValueError, match="exactly one of checkpoint"):
        memorize(_cfg(tiny, "bad", "logger=none", f"checkpoint={tiny['export']}", "generated_dir=x"))


def test_module_shim_is_a_hydra_app(tmp_path):
    """`python -m musicdiff.memorize` (the console script's target) composes its root config."""
    proc = subprocess.run([sys.executable, "-m", "musicdiff.memorize", "--cfg", "job", "embedder=clap",
                           "top_n=7"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "top_n: 7" in proc.stdout and "ClapEmbedder" in proc.stdout
