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

from musicdiff.evaluation import AudioSet, FrechetDistance, KLDivergence
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


def test_metrics_separate_different_music(clips):
    """FD/KL on musicnn: a set is closer to a noisy copy of itself than to different music."""
    rng = np.random.default_rng(0)
    base = [clips["chord"][:, i * 16000:(i + 3) * 16000] for i in range(3)]
    copy = [a + 0.003 * torch.from_numpy(rng.standard_normal(a.shape).astype(np.float32)) for a in base]
    other = [clips["drums"][:, i * 16000:(i + 3) * 16000] for i in range(3)]
    names = ["a", "b", "c"]
    sets = {k: AudioSet(v, names, SR) for k, v in (("base", base), ("copy", copy), ("other", other))}
    kl = KLDivergence(MusicnnEmbedder(), name="kl_musicnn")
    assert kl.evaluate(sets["copy"], sets["base"])["kl_musicnn"] < 0.1 * kl.evaluate(sets["other"], sets["base"])[
        "kl_musicnn"]
    fd = FrechetDistance(MusicnnEmbedder(), name="fd_musicnn")
    assert fd.evaluate(sets["copy"], sets["base"])["fd_musicnn"] < 0.1 * fd.evaluate(sets["other"], sets["base"])[
        "fd_musicnn"]


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
