"""Inputs of the memorization entry point: dataset items, generated folders, the embedding cache."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from musicdiff.memorization import AudioItem, RepeatGroups, in_distribution_prompts
from musicdiff.memorization.inputs import EmbeddingCache, embedding_key, folder_items, training_items


def _wavs(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        sf.write(folder / f"{i}.wav", 0.1 * rng.standard_normal((800, 2)), 16000)
    return sorted(folder.glob("*.wav"))


def test_latent_dataset_items_are_the_source_audio(tiny_latent_dir, _synthetic_audio_dir, tmp_path):
    from musicdiff.data.latent_writer import read_index
    from musicdiff.data.latent_dataset import LatentShardDataset

    index = read_index(tiny_latent_dir)
    ds = LatentShardDataset(tiny_latent_dir, index["sample_rate"], index["io_channels"], window_seconds=1.0)
    items, skipped = training_items(ds)
    captions = {e["path"]: e["caption"] for e in json.loads((_synthetic_audio_dir / "metadata.json").read_text())}
    assert len(items) == 8 and not skipped
    assert all(it.path == str(_synthetic_audio_dir / it.name) and it.prompt == captions[it.name] for it in items)
    # source audio moved away: those items are skipped and counted
    audio = shutil.copytree(_synthetic_audio_dir, tmp_path / "audio")
    os.remove(audio / items[0].name)
    latents = shutil.copytree(tiny_latent_dir, tmp_path / "latents")
    (latents / "index.json").write_text(json.dumps({**index, "root": str(audio)}))
    items2, skipped2 = training_items(LatentShardDataset(latents, index["sample_rate"], index["io_channels"],
                                                         window_seconds=1.0))
    assert len(items2) == 7 and skipped2 == {"missing_audio": 1}


def test_folder_items_prompts_and_splits(tmp_path):
    _wavs(tmp_path / "gen" / "sub", 2)
    (tmp_path / "gen" / "generations.jsonl").write_text(
        json.dumps({"path": "sub/0.wav", "prompt": "from manifest", "split": "out_of_distribution"}) + "\n")
    items = folder_items(tmp_path / "gen", split_of=lambda p: "in_distribution" if p else None)
    assert [(it.name, it.prompt, it.split) for it in items] == [
        ("sub/0.wav", "from manifest", "out_of_distribution"), ("sub/1.wav", None, None)]
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("path,prompt\nsub/1.wav,given prompt\n")
    items = folder_items(tmp_path / "gen", prompts, split_of=lambda p: "in_distribution" if p else None)
    assert (items[1].prompt, items[1].split) == ("given prompt", "in_distribution")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        folder_items(tmp_path / "empty")


def test_embedding_cache_roundtrip_staleness_and_key(tmp_path):
    files = _wavs(tmp_path / "train", 3)
    items = [AudioItem(f.name, "p", path=str(f)) for f in files]
    cache = EmbeddingCache(tmp_path / "cache", "abc")
    assert cache.load(items) is None
    emb = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float32)
    cache.save(items, emb, [0, 2], {"unreadable": 1})
    got, kept, skipped = cache.load(items)
    assert kept == [0, 2] and skipped == {"unreadable": 1}
    np.testing.assert_allclose(got, [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)
    st = os.stat(files[1])
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a training file changed
    assert cache.load(items) is None
    assert cache.load(items[:2]) is None  # a different file list
    emb_cfg = {"_target_": "musicdiff.evaluation.ClapEmbedder", "path": "clap", "device": "cpu", "batch_size": 4}
    assert embedding_key(emb_cfg, {"root": "a"}) == embedding_key({**emb_cfg, "device": "cuda", "batch_size": 64},
                                                                  {"root": "a"})
    assert embedding_key(emb_cfg, {"root": "a"}) != embedding_key(emb_cfg, {"root": "b"})
    assert embedding_key(emb_cfg, {"root": "a"}) != embedding_key({**emb_cfg, "path": "other"}, {"root": "a"})


def test_in_distribution_prompts_fill_with_captions():
    items = [AudioItem(f"t{i}", f"caption {i % 5}", audio=torch.zeros(1, 4), sample_rate=8) for i in range(8)]
    rep = RepeatGroups([[6, 2]], [(2, 6, 1.0)], 0.95, len(items))
    assert in_distribution_prompts(items, rep) == ["caption 1", "caption 2"]  # the group's items only
    filled = in_distribution_prompts(items, rep, max_prompts=4, fill=True, seed=0)
    assert filled[:2] == ["caption 1", "caption 2"] and len(filled) == 4 and len(set(filled)) == 4
    assert in_distribution_prompts(items, rep, fill=True) == in_distribution_prompts(items, rep, fill=True)
    assert set(in_distribution_prompts(items, rep, fill=True)) == {f"caption {i}" for i in range(5)}
