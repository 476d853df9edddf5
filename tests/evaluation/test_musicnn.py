"""musicnn in PyTorch vs the TensorFlow reference (musicnn 0.1.0), and its checkpoint reader.

The fixture ``fixtures/musicnn_tf_reference.npz`` holds TF outputs of the wheel's own
``models.define_model`` graph on three synthetic clips (``musicnn_clips.py``), made by
``fixtures/make_musicnn_reference.py`` in a throwaway TensorFlow venv. Measured on those clips
(torch 2.13 CPU vs TF 2.21 CPU): max |Δ tag likelihood| 4e-6, max |Δ penultimate| 3e-5 (values
up to 5), for both MTT_musicnn and MSD_musicnn; the asserted tolerances leave 25x headroom.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soxr
import torch

from musicdiff.evaluation.musicnn import (MTT_LABELS, MusicnnEmbedder, MusicnnFrontEndAudio, default_weights_dir,
                                          load_musicnn, patches)
from musicdiff.evaluation.tf_checkpoint import CheckpointFormatError, load_tf_checkpoint
from tests.evaluation.musicnn_clips import SR, musicnn_clips

REFERENCE = Path(__file__).with_name("fixtures") / "musicnn_tf_reference.npz"


@pytest.fixture(scope="module")
def clips() -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v)[None] for k, v in musicnn_clips().items()}


@pytest.mark.parametrize("model", ["MTT_musicnn", "MSD_musicnn"])
def test_matches_tensorflow_reference(model, clips):
    ref = np.load(REFERENCE)
    outs = MusicnnEmbedder(model).patch_outputs(list(clips.values()), SR)
    for name, out in zip(clips, outs):
        tags, pen = ref[f"{model}/{name}/taggram"], ref[f"{model}/{name}/penultimate"]
        assert out["taggram"].shape == tags.shape == (2, 50)
        np.testing.assert_allclose(out["taggram"], tags, atol=1e-4, rtol=0)
        np.testing.assert_allclose(out["penultimate"], pen, atol=1e-3, rtol=0)


def test_front_end_matches_librosa_log_mel(clips):
    """Our STFT/mel/float16/log chain vs librosa's (stored as float16: compare within its resolution)."""
    ref = np.load(REFERENCE)["chord/logmel_f16"].astype(np.float32)
    ours = MusicnnFrontEndAudio()(clips["chord"][0])[:187].numpy()
    np.testing.assert_allclose(ours, ref, atol=4e-3, rtol=0)


def test_embedder_outputs_resampling_stereo_and_short_clips(clips):
    emb = MusicnnEmbedder("MTT_musicnn")
    saw = clips["saw"]
    stereo_48k = torch.from_numpy(np.repeat(soxr.resample(saw[0].numpy(), SR, 48000, quality="HQ")[None], 2, 0))
    e16, e48 = emb.embed_audio([saw], SR), emb.embed_audio([stereo_48k], 48000)
    assert e16.shape == (1, 200) and e16.dtype == np.float32
    cos = float((e16 @ e48.T).item() / np.linalg.norm(e16) / np.linalg.norm(e48))
    assert cos > 0.99  # the same clip at 48 kHz stereo embeds like the 16 kHz mono original
    probs = emb.classify([clips["chord"], clips["drums"], saw[:, :8000]], SR)  # 0.5 s: repeat-padded to 3 s
    assert probs.shape == (3, len(MTT_LABELS)) and np.allclose(probs.sum(1), 1.0)
    top = [MTT_LABELS[i] for i in probs[1].argsort()[::-1][:5]]
    assert {"drums", "beat", "techno", "electronic", "beats", "fast"} & set(top), top
    assert len(patches(torch.zeros(500, 96))) == 2 and len(patches(torch.zeros(10, 96))) == 1


def test_checkpoint_reader_reads_all_layers_and_rejects_damage(tmp_path):
    src = default_weights_dir("MTT_musicnn")
    tensors = load_tf_checkpoint(f"{src}/")
    assert len(tensors) == 64 and tensors["conv2d/kernel"].shape == (7, 38, 1, 204)
    assert tensors["dense_1/kernel"].shape == (200, 50) and not any(k.endswith("/Adam") for k in tensors)
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    index = (bad / ".index").read_bytes()
    (bad / ".index").write_bytes(index[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointFormatError, match="magic"):
        load_tf_checkpoint(f"{bad}/")
    (bad / ".index").write_bytes(index)
    data = bad / ".data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(CheckpointFormatError, match="stored bytes"):
        load_tf_checkpoint(f"{bad}/")
    data.unlink()
    with pytest.raises(FileNotFoundError, match="data shard"):
        load_tf_checkpoint(f"{bad}/")
    with pytest.raises(ValueError, match="unknown model"):
        load_musicnn("MTT_vgg")
    with pytest.raises(ValueError, match="not a musicnn model, missing variables"):  # e.g. the wheel's VGG model
        load_musicnn("MTT_musicnn", str(src.parent / "MTT_vgg"))


def test_metrics_config_scores_folders_with_intervals(tmp_path, clips, caplog):
    """conf/metrics/musicnn.yaml end to end: FD/KL with bootstrap intervals, flagged small-sample FD."""
    import soundfile as sf
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from musicdiff.evaluation import evaluate_folders

    conf = OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "metrics" / "musicnn.yaml")
    for m in conf.metrics.values():
        m.bootstrap = 50
    suite = instantiate(conf)
    rng = np.random.default_rng(0)
    for folder, name in (("ref", "chord"), ("copy", "chord"), ("other", "drums")):
        (tmp_path / folder).mkdir()
        x = clips[name][0].numpy()
        for i in range(3):  # three 3 s excerpts as stereo files; "copy" = the reference + faint noise
            seg = x[i * 16000:(i + 3) * 16000] + (0.003 * rng.standard_normal(48000) if folder == "copy" else 0)
            sf.write(tmp_path / folder / f"{i}.wav", np.stack([seg, seg], 1).astype(np.float32), SR)
    copy = evaluate_folders(tmp_path / "copy", tmp_path / "ref", metrics=suite)
    other = evaluate_folders(tmp_path / "other", tmp_path / "ref", metrics=suite)
    assert copy["fd_musicnn"] < 0.1 * other["fd_musicnn"] and copy["kl_musicnn"] < 0.1 * other["kl_musicnn"]
    assert other["fd_musicnn"] > 1 and other["kl_musicnn"] > 0.05
    assert other["fd_musicnn_diagonal"] == 1.0 and "200 dimensions" in caplog.text
    for key in ("fd_musicnn", "kl_musicnn", "kl_pooled_musicnn"):
        assert other[f"{key}_ci_low"] <= other[f"{key}_ci_high"]
