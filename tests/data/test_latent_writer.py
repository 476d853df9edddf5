"""Pre-encoding into latent shards (atomic, resumable, skips bad files) and the latent dataset."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from musicdiff.data.audio_dataset import AudioFolderDataset
from musicdiff.data.collate import collate
from musicdiff.data.latent_dataset import LatentShardDataset
from musicdiff.data.latent_writer import encode_dataset, read_index
from musicdiff.data.prompts import PromptBuilder
from musicdiff.data.synthetic import generate_synthetic_dataset

SR, RATIO = 16000, 64


class StubAutoencoder(nn.Module):
    """Latents per 64-sample block: [mean L, mean R, mean |L|, block index / 1000]."""

    sample_rate, io_channels, downsampling_ratio = SR, 2, RATIO

    def __init__(self, latent_dim: int = 4, fail_on_call: int | None = None) -> None:
        super().__init__()
        self.latent_dim, self.fail_on_call = latent_dim, fail_on_call
        self.scale = nn.Parameter(torch.ones(()))
        self.calls: Counter[str] = Counter()

    def encode(self, audio: torch.Tensor, sample: bool = True) -> torch.Tensor:
        self.calls["encode"] += 1
        if self.fail_on_call is not None and self.calls["encode"] >= self.fail_on_call:
            raise RuntimeError("simulated crash")
        audio = F.pad(audio, (0, -audio.shape[-1] % RATIO))
        mean, absmean = F.avg_pool1d(audio, RATIO), F.avg_pool1d(audio.abs(), RATIO)
        pos = torch.arange(mean.shape[-1], dtype=audio.dtype).expand(audio.shape[0], 1, -1) / 1000
        z = torch.cat([mean, absmean[:, :1], pos], dim=1) * self.scale
        return z[:, : self.latent_dim]

    def encode_chunked(self, audio, chunk_size=128, overlap=32, sample=False):
        self.calls["chunked"] += 1
        return self.encode(audio, sample=sample)


@pytest.fixture()
def folder(tmp_path):
    root = tmp_path / "audio"
    generate_synthetic_dataset(root, 5, SR, 1.0, seed=0, min_seconds=0.3)
    (root / "audio" / "broken.wav").write_bytes(b"RIFF" + bytes(100))
    return root


def _all_latents(out):
    index = read_index(out)
    result = {}
    for shard in index["shards"]:
        tensors = load_file(str(out / f"{shard['name']}.safetensors"))
        for line in (out / f"{shard['name']}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            assert rec["path"] not in result, "a file was encoded twice"
            result[rec["path"]] = (tensors[rec["key"]], rec)
    return result


def test_encode_writes_shards_and_resumes(folder, tmp_path):
    out = tmp_path / "latents"
    stub = StubAutoencoder()
    summary = encode_dataset(folder, stub, out, shard_size=2, batch_size=2, progress=False)
    assert summary == {"encoded": 5, "already_done": 0, "items": 5, "shards": 3, "skipped": {"unreadable": 1},
                       "normalised": 0}
    assert sorted(p.name for p in out.iterdir()) == ["index.json"] + [f"shard_0000{i}.{e}" for i in range(3)
                                                                       for e in ("jsonl", "safetensors")]
    ds = AudioFolderDataset(folder, SR, 2, 1.0)
    got = _all_latents(out)
    assert len(got) == 5
    for i in range(len(ds)):
        z, rec = got[ds.relpath(i)]
        audio = ds.load_full(i)
        assert z.shape == (4, math.ceil(audio.shape[-1] / RATIO)) and rec["num_latents"] == z.shape[1]
        assert torch.allclose(z, stub.encode(audio[None])[0])
        assert rec["seconds_total"] == math.ceil(audio.shape[-1] / SR) and rec["metadata"]["caption"]
    # rerun: nothing to do
    again = StubAutoencoder()
    summary = encode_dataset(folder, again, out, shard_size=2, progress=False)
    assert summary["encoded"] == 0 and summary["already_done"] == 5 and summary["shards"] == 3
    assert sum(again.calls.values()) == 0
    # new files: only they are encoded, into a new shard
    sf.write(str(folder / "audio" / "new.wav"), np.full((8000, 2), 0.2, np.float32), SR)
    summary = encode_dataset(folder, again, out, shard_size=2, progress=False)
    assert summary["encoded"] == 1 and summary["items"] == 6 and summary["shards"] == 4


def test_interrupted_run_resumes_without_duplicates(folder, tmp_path):
    out = tmp_path / "latents"
    with pytest.raises(RuntimeError, match="simulated crash"):
        encode_dataset(folder, StubAutoencoder(fail_on_call=4), out, shard_size=2, batch_size=1, progress=False)
    index = read_index(out)
    assert len(index["shards"]) == 1 and len(index["done"]) == 2
    assert not list(out.glob("*.tmp"))
    summary = encode_dataset(folder, StubAutoencoder(), out, shard_size=2, batch_size=1, progress=False)
    assert summary["encoded"] == 3 and summary["already_done"] == 2 and summary["items"] == 5
    assert len(_all_latents(out)) == 5


def test_batched_and_chunked_encoding_agree(folder, tmp_path):
    single, batched, chunked = StubAutoencoder(), StubAutoencoder(), StubAutoencoder()
    encode_dataset(folder, single, tmp_path / "a", batch_size=1, chunked=False, progress=False)
    encode_dataset(folder, batched, tmp_path / "b", batch_size=3, chunked=False, progress=False)
    encode_dataset(folder, chunked, tmp_path / "c", batch_size=2, chunk_size=8, overlap=2, progress=False)
    a, b, c = (_all_latents(tmp_path / n) for n in "abc")
    assert batched.calls["encode"] == 2 and chunked.calls["chunked"] == 5 and single.calls["chunked"] == 0
    for key in a:
        assert torch.equal(a[key][0], b[key][0]) and torch.equal(a[key][0], c[key][0])


def test_encode_rejects_mismatches(folder, tmp_path):
    encode_dataset(folder, StubAutoencoder(), tmp_path / "z", progress=False)
    with pytest.raises(ValueError, match="latent_dim=4"):
        encode_dataset(folder, StubAutoencoder(latent_dim=3), tmp_path / "z", progress=False)
    with pytest.raises(ValueError, match="autoencoder expects 16000 Hz"):
        encode_dataset(AudioFolderDataset(folder, 22050, 2, 1.0), StubAutoencoder(), tmp_path / "y", progress=False)
    with pytest.raises(ValueError, match="shard_size"):
        encode_dataset(folder, StubAutoencoder(), tmp_path / "x", shard_size=0, progress=False)


@pytest.fixture()
def latent_dir(folder, tmp_path):
    out = tmp_path / "latents"
    encode_dataset(folder, StubAutoencoder(), out, shard_size=2, progress=False)
    return out


def test_latent_crops_timing_and_padding(latent_dir, folder):
    ds = LatentShardDataset(latent_dir, SR, 2, window_latents=40, latent_dim=4,
                            prompt_builder=PromptBuilder(caption_prob=1.0))
    assert len(ds) == 5 and ds.ratio == RATIO
    captions = {e["path"]: e["caption"] for e in json.loads((folder / "metadata.json").read_text())}
    starts = set()
    for idx in range(len(ds)):
        n = ds.items[idx][1]["num_latents"]
        for _ in range(10):
            item = ds[idx]
            start = int(round(float(item["latents"][3, 0]) * 1000))
            real = min(40, n - start)
            assert item["latents"].shape == (4, 40) and item["padding_mask"].sum() == real
            assert torch.allclose(item["latents"][3, :real], (torch.arange(real) + start) / 1000)
            assert float(item["latents"][:, real:].abs().sum()) == 0.0
            assert item["seconds_start"] == math.floor(start * RATIO / SR)
            assert item["seconds_total"] == ds.items[idx][1]["seconds_total"]
            assert item["prompt"] == captions[ds.items[idx][1]["path"]]
            assert item["path"].endswith(ds.items[idx][1]["path"])
            starts.add(start)
    assert len(starts) > 20 and max(starts) > 125  # crops reach late into the files
    long = LatentShardDataset(latent_dir, SR, 2, window_seconds=2.0, random_crop=False)
    assert long.window_latents == 500
    item = long[0]
    assert int(item["padding_mask"].sum()) == long.items[0][1]["num_latents"] and item["seconds_start"] == 0.0
    batch = collate([long[i] for i in range(3)])
    assert batch["latents"].shape == (3, 4, 500) and batch["padding_mask"].shape == (3, 500)


def test_latent_dataset_errors_and_missing_shards(latent_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="MUSICDIFF_LATENT_DIR"):
        LatentShardDataset(tmp_path / "nowhere", SR, 2, 1.0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="musicdiff-encode"):
        LatentShardDataset(tmp_path / "empty", SR, 2, 1.0)
    with pytest.raises(ValueError, match="sample_rate=16000"):
        LatentShardDataset(latent_dir, 44100, 2, 1.0)
    with pytest.raises(ValueError, match="latent_dim=4"):
        LatentShardDataset(latent_dir, SR, 2, 1.0, latent_dim=64)
    (latent_dir / "shard_00001.safetensors").unlink()
    (latent_dir / "shard_00002.safetensors").write_bytes(b"junk")
    ds = LatentShardDataset(latent_dir, SR, 2, 1.0)
    assert len(ds) == 2 and dict(ds.skipped) == {"missing_shard": 2, "unreadable_shard": 1}
    (latent_dir / "shard_00000.safetensors").unlink()
    with pytest.raises(ValueError, match="no usable latents"):
        LatentShardDataset(latent_dir, SR, 2, 1.0)


def test_encode_and_training_share_the_full_scale_rule(tmp_path):
    """Issue 13: float audio above full scale went into the latents as is (here 4x) while training clamped it.

    Now both scale the file by 1 / its peak: the latents are those of the scaled audio, the training
    crops are slices of the same scaled audio, and both count the file.
    """
    root = tmp_path / "audio"
    root.mkdir()
    t = np.arange(SR, dtype=np.float32) / SR
    level = np.where(t < 0.5, 2.0, 4.0).astype(np.float32)  # the crop [0, 0.5 s) peaks at 2, the file at 4
    hot = np.stack([level * np.sin(2 * np.pi * 220 * t), 0.5 * level * np.sin(2 * np.pi * 330 * t)], axis=1)
    sf.write(str(root / "hot.wav"), hot, SR, subtype="FLOAT")
    sf.write(str(root / "ok.wav"), 0.1 * hot, SR, subtype="PCM_16")
    stub = StubAutoencoder()
    summary = encode_dataset(root, stub, tmp_path / "latents", progress=False)
    assert summary["normalised"] == 1 and summary["encoded"] == 2
    got = _all_latents(tmp_path / "latents")
    peak = float(np.abs(hot).max())
    scaled = torch.from_numpy(hot.T.copy()) / peak
    assert torch.allclose(got["hot.wav"][0], stub.encode(scaled[None])[0], atol=1e-6)
    assert got["hot.wav"][1]["gain"] == pytest.approx(1 / peak)
    assert "gain" not in got["ok.wav"][1]
    for validate in (True, False):  # peak found at construction, or on first use
        ds = AudioFolderDataset(root, SR, 2, 0.5, random_crop=False, validate=validate)
        i = ds.files.index(root / "hot.wav")
        assert torch.allclose(ds.load_full(i), scaled)
        crop = ds[i]["audio"]
        assert torch.allclose(crop, scaled[:, : SR // 2])  # the whole file's gain, not clamped
        assert ds.normalised == 1
