"""dataset=webdataset: audio and latent tar shards give the folder/latent datasets' items; the epoch
plan is exactly-once over ranks x workers and resumes exactly; crops keep their timing; bad samples
and truncated tars are skipped and counted; pipe: and fsspec URLs; musicdiff-encode format=webdataset."""

from __future__ import annotations

import io
import json
import math
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musicdiff.data.audio_dataset import AudioFolderDataset
from musicdiff.data.collate import collate
from musicdiff.data.latent_dataset import LatentShardDataset
from musicdiff.data.latent_writer import encode_dataset, read_index
from musicdiff.data.make_shards import main as make_shards_main
from musicdiff.data.make_shards import make_shards
from musicdiff.data.prompts import PromptBuilder
from musicdiff.data.webdataset import WebDatasetShards
from musicdiff.data.webdataset_io import encode_npy, write_tar
from musicdiff.data.webdataset_plan import worker_plan
from musicdiff.training.data_order import ResumableShardedSampler
from tests.data.helpers import tone
from tests.data.test_latent_writer import RATIO, SR, StubAutoencoder

CAPTIONS = PromptBuilder(caption_prob=1.0)


@pytest.fixture()
def folder(tmp_path):
    """7 mono/stereo wavs of different lengths with caption sidecars; one float file peaks at 2.0."""
    root = tmp_path / "audio"
    root.mkdir()
    for i in range(7):
        data = tone(200 + 40 * i, SR, 0.6 + 0.25 * i, channels=1 + i % 2)
        subtype = "PCM_16"
        if i == 3:
            data, subtype = data * 4.0, "FLOAT"  # above full scale: scaled by 1/peak
        sf.write(str(root / f"song{i}.wav"), data, SR, subtype=subtype)
        (root / f"song{i}.json").write_text(json.dumps({"caption": f"tone number {i}", "genre": "test"}))
    return root


def _latent_shards(root, specs, ratio=RATIO):
    """Latent shards: spec = list of (num_latents, seconds_start) per sample; channel 0 = frame index."""
    root.mkdir(parents=True, exist_ok=True)
    entries, k = [], 0
    for s, shard in enumerate(specs):
        samples = []
        for n, start in shard:
            z = np.zeros((4, n), np.float32)
            z[0] = np.arange(n)
            meta = {"path": f"file{k}.wav", "seconds_start": start, "seconds_total": 99.0,
                    "metadata": {"caption": f"item {k}"}}
            samples.append({"__key__": f"{k:06d}", "latents.npy": encode_npy(z),
                            "mask.npy": encode_npy(np.ones(n, bool)), "json": json.dumps(meta).encode()})
            k += 1
        write_tar(root / f"lat-{s:03d}.tar", samples)
        entries.append({"url": f"lat-{s:03d}.tar", "num_samples": len(samples)})
    (root / "shards.json").write_text(json.dumps({"format": "musicdiff-webdataset", "kind": "latents",
                                                  "shards": entries}))
    return root


def _latents(root, **kw):
    args = dict(kind="latents", sample_rate=SR, channels=2, window_seconds=8 * RATIO / SR, downsampling_ratio=RATIO,
                latent_dim=4, prompt_builder=CAPTIONS, shuffle_buffer=0)
    return WebDatasetShards(str(root) if isinstance(root, Path) else root, **{**args, **kw})


def test_audio_shards_give_the_folder_datasets_items(folder, tmp_path):
    """make_shards + WebDatasetShards == AudioFolderDataset item for item (audio, mask, timing, prompt, gain)."""
    summary = make_shards(folder, tmp_path / "shards", shard_size=3, progress=False)
    assert (summary["samples"], summary["shards"]) == (7, 3)
    ref = AudioFolderDataset(folder, SR, 2, window_seconds=1.0, random_crop=False, prompt_builder=CAPTIONS,
                             window_multiple=RATIO)
    ds = WebDatasetShards(str(tmp_path / "shards"), "audio", SR, 2, 1.0, window_multiple=RATIO, random_crop=False,
                          prompt_builder=CAPTIONS, shuffle_buffer=0)
    assert len(ds) == 7 and ds.counts == [3, 3, 1]
    items = {it["path"]: it for it in ds}
    assert len(items) == 7
    for i in range(len(ref)):
        want, got = ref[i], items[ref.relpath(i)]
        assert torch.allclose(got["audio"], want["audio"], atol=1e-6), ref.relpath(i)
        assert torch.equal(got["padding_mask"], want["padding_mask"])
        for key in ("prompt", "seconds_start", "seconds_total"):
            assert got[key] == want[key], key
    assert float(items["song3.wav"]["audio"].abs().max()) == pytest.approx(1.0, abs=1e-3)  # full-scale rule
    assert not items["song0.wav"]["padding_mask"].all()  # 0.6 s file, 1 s window: padded


def test_random_audio_crops_carry_their_offset(tmp_path):
    """A random crop's audio is the file at floor(seconds_start) .. and seconds_total = ceil(length)."""
    folder = tmp_path / "noise"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):  # noise: every crop occurs at one offset only; PCM is read by seeking, FLOAT whole
        sf.write(str(folder / f"n{i}.wav"), (0.3 * rng.standard_normal((int(SR * (1.3 + 0.4 * i)), 2))), SR,
                 subtype="FLOAT" if i % 2 else "PCM_16")
        (folder / f"n{i}.txt").write_text("unused")
        (folder / f"n{i}.json").write_text(json.dumps({"caption": f"noise {i}"}))
    make_shards(folder, tmp_path / "shards", shard_size=4, progress=False)
    ds = WebDatasetShards(str(tmp_path / "shards"), "audio", SR, 1, 0.25, prompt_builder=CAPTIONS)
    for it in ds:
        full, _ = sf.read(str(folder / it["path"]), dtype="float32", always_2d=True)
        full = full.mean(axis=1) / max(1.0, np.abs(full).max())  # the folder dataset's full-scale rule
        n = int(it["padding_mask"].sum())
        crop = it["audio"][0, :n].numpy()
        candidates = np.flatnonzero(np.abs(full[: len(full) - n + 1] - crop[0]) < 1e-5)
        hits = [o for o in candidates if np.abs(full[o: o + n] - crop).max() < 1e-5]
        assert len(hits) == 1 and it["seconds_start"] == math.floor(hits[0] / SR), it["path"]
        assert it["seconds_total"] == math.ceil(len(full) / SR)


def test_plan_is_exactly_once_over_2_ranks_x_2_workers_and_resumes_exactly():
    """Uneven shards: every epoch position exactly once; new order per epoch; resume after m micro-batches
    replays the uninterrupted sequence of the rest of the epoch (DataLoader round robin), nothing else."""
    counts, world, workers, batch = [5, 9, 3, 7, 8], 2, 2, 2
    sampler = ResumableShardedSampler(sum(counts), batch * 2, 0, world)  # grad_accum 2: 4 items per rank-step
    per_rank = sampler.batches_per_epoch() * sampler.micro_batch  # 32 items -> 2 * 16 used of 32

    def rank_sequence(epoch, rank, consumed=0):
        plans = [worker_plan(counts, seed=3, epoch=epoch, rank=rank, world_size=world, items_per_rank=per_rank,
                             batch_size=batch, workers=workers, worker=w, consumed_items=consumed, buffer_size=6)
                 for w in range(workers)]
        streams = [[p.first_position + i for i in p.order] for p in plans]
        batches = [[s[j:j + batch] for j in range(0, len(s), batch)] for s in streams]
        out, j = [], 0
        while any(batches):  # DataLoader: round robin over the workers that still have batches
            if batches[j % workers]:
                out.append(batches[j % workers].pop(0))
            j += 1
        return out

    orders = []
    for epoch in (0, 1):
        seqs = [rank_sequence(epoch, r) for r in range(world)]
        seen = Counter(p for seq in seqs for b in seq for p in b)
        assert sorted(seen) == list(range(per_rank * world)) and set(seen.values()) == {1}
        assert len(seqs[0]) == len(seqs[1]) == per_rank // batch
        orders.append(seqs[0])
        for m in range(1, per_rank // batch):
            assert rank_sequence(epoch, 1, consumed=m * batch) == seqs[1][m:], (epoch, m)
    assert orders[0] != orders[1]


def test_loader_with_workers_resumes_mid_epoch_without_repeats(tmp_path):
    """Real DataLoader, 2 workers, shuffle buffer: the loader rebuilt at batch m yields exactly the rest."""
    root = _latent_shards(tmp_path / "lat", [[(10, 0.0)] * 5, [(10, 0.0)] * 2, [(10, 0.0)] * 6])
    ds = _latents(root, shuffle_buffer=4)

    def paths(start_batch):
        sampler = ResumableShardedSampler(len(ds), 2, 0, 1, seed=0)
        sampler.set_position(1, start_batch)
        ds.set_epoch(1)
        return [tuple(m["path"] for m in b["metadata"]) for b in ds.make_loader(sampler, 2, 2, collate)]

    full = paths(0)
    assert len(full) == 6 and len({p for b in full for p in b}) == 12
    assert paths(2) == full[2:] and paths(5) == full[5:]


def test_latent_random_crops_keep_seconds_start(tmp_path):
    """stable-audio-tools PR #219: a random crop of pre-encoded latents must label its own start.
    Channel 0 of every latent frame holds its frame index, so each crop shows where it starts."""
    root = _latent_shards(tmp_path / "lat", [[(40, 0.0), (25, 12.0)], [(30, 3.0), (6, 0.0)]], ratio=RATIO)
    ds = _latents(root)
    for epoch in range(3):
        ds.set_epoch(epoch)
        for it in ds:
            meta_start = {"file0.wav": 0.0, "file1.wav": 12.0, "file2.wav": 3.0, "file3.wav": 0.0}[it["path"]]
            first = int(it["latents"][0, 0])
            assert it["seconds_start"] == math.floor(meta_start + first * RATIO / SR)
            assert it["seconds_total"] == 99.0
            n = int(it["padding_mask"].sum())
            assert torch.equal(it["latents"][0, :n], torch.arange(first, first + n, dtype=torch.float32))
            assert it["prompt"].startswith("item")
    starts = {int(it["latents"][0, 0]) for e in range(5) for it in (ds.set_epoch(e) or ds)}
    assert len(starts) > 2  # crops really move


def test_bad_samples_are_skipped_counted_and_replaced(tmp_path, caplog):
    """Corrupt audio, no caption, bad JSON, NaN latents: logged, counted, replaced (same batch count);
    a truncated tar is reported with its URL."""
    good = io.BytesIO()
    sf.write(good, tone(300, SR, 0.5), SR, format="WAV", subtype="PCM_16")
    ok = {"wav": good.getvalue(), "json": b'{"caption": "fine"}'}
    write_tar(tmp_path / "a.tar", [{"__key__": "0", **ok}, {"__key__": "1", "wav": b"RIFF garbage", **{"txt": b"fine"}},
                                   {"__key__": "2", "wav": good.getvalue()}, {"__key__": "3", **ok},
                                   {"__key__": "4", "wav": good.getvalue(), "json": b"{not json"}])
    ds = WebDatasetShards(str(tmp_path / "a.tar"), "audio", SR, 1, 0.25, prompt_builder=CAPTIONS, shuffle_buffer=0)
    items = list(ds)
    assert len(items) == 5 and all(it["prompt"] == "fine" for it in items)
    assert ds.skipped == Counter({"unreadable": 1, "missing_caption": 1, "bad_metadata": 1})
    assert "a.tar#1: unreadable" in caplog.text

    root = _latent_shards(tmp_path / "lat", [[(10, 0.0)] * 3])
    with tarfile.open(root / "lat-000.tar") as tar:  # rewrite sample 1 with NaN latents
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    members["000001.latents.npy"] = encode_npy(np.full((4, 10), np.nan, np.float32))
    exts = ("latents.npy", "mask.npy", "json")
    samples = [{"__key__": f"{k:06d}", **{ext: members[f"{k:06d}.{ext}"] for ext in exts}}
               for k in range(3)]
    write_tar(root / "lat-000.tar", samples)
    ds = _latents(root)
    assert len(list(ds)) == 3 and ds.skipped == Counter({"non_finite_latents": 1})

    data = (root / "lat-000.tar").read_bytes()
    (root / "lat-000.tar").write_bytes(data[: len(data) // 2])  # truncated mid-shard
    caplog.clear()
    ds = _latents(root)
    items = list(ds)
    assert len(items) == 3 and ds.skipped["truncated_shard"] == 1
    assert "truncated or corrupt shard" in caplog.text and "lat-000.tar" in caplog.text


def test_brace_lists_pipe_and_fsspec_urls_read_the_same_samples(tmp_path):
    """Brace-expanded local lists, `pipe:cat ...` and an fsspec URL (memory://) through WebDataset's gopen."""
    import fsspec

    root = _latent_shards(tmp_path / "lat", [[(9, 0.0)] * 2, [(9, 0.0)] * 3])
    local = _latents(f"{root}/lat-{{000..001}}.tar")
    assert local.counts == [2, 3]
    want = sorted(it["path"] for it in local)
    piped = _latents([f"pipe:cat {root}/lat-000.tar", f"pipe:cat {root}/lat-001.tar"],
                     index=str(root / "shards.json"))
    assert sorted(it["path"] for it in piped) == want
    mem = fsspec.filesystem("memory")
    for name in ("lat-000.tar", "lat-001.tar"):
        mem.pipe(f"/wds/{name}", (root / name).read_bytes())
    remote = _latents("memory://wds/lat-{000..001}.tar")  # counted by streaming (no index)
    assert remote.counts == [2, 3] and sorted(it["path"] for it in remote) == want
    with pytest.raises(FileNotFoundError, match="8 shard.*not found, e.g. .*lat-002.tar"):
        _latents(f"{root}/lat-{{000..009}}.tar")


def test_encode_format_webdataset_matches_the_latent_shards(tmp_path):
    """musicdiff-encode format=webdataset stores the same latents, timing and captions as the default
    format; the streamed items equal LatentShardDataset's, and a rerun resumes (nothing re-encoded)."""
    from musicdiff.data.synthetic import generate_synthetic_dataset

    audio = tmp_path / "audio"
    generate_synthetic_dataset(audio, 5, SR, 1.0, seed=0, min_seconds=0.3)
    ae = StubAutoencoder()
    a = encode_dataset(audio, ae, tmp_path / "st", shard_size=2, progress=False)
    b = encode_dataset(audio, ae, tmp_path / "wd", shard_size=2, progress=False, format="webdataset")
    assert a["items"] == b["items"] == 5 and read_index(tmp_path / "wd")["shard_format"] == "webdataset"
    assert sorted(p.name for p in (tmp_path / "wd").glob("*.tar")) == ["shard_00000.tar", "shard_00001.tar",
                                                                       "shard_00002.tar"]
    assert encode_dataset(audio, ae, tmp_path / "wd", shard_size=2, progress=False, format="webdataset")[
        "encoded"] == 0
    with pytest.raises(ValueError, match="webdataset shards, not safetensors"):
        encode_dataset(audio, ae, tmp_path / "wd", progress=False)
    window = 1.0
    ref = LatentShardDataset(tmp_path / "st", SR, 2, window_seconds=window, random_crop=False,
                             prompt_builder=CAPTIONS)
    ds = _latents(tmp_path / "wd", window_seconds=window, random_crop=False)
    got = {it["path"]: it for it in ds}
    assert len(got) == len(ref) == 5
    for i in range(len(ref)):
        want = ref[i]
        it = got[Path(want["path"]).relative_to(audio).as_posix()]
        assert torch.equal(it["latents"], want["latents"]) and torch.equal(it["padding_mask"], want["padding_mask"])
        assert (it["prompt"], it["seconds_start"], it["seconds_total"]) == (
            want["prompt"], want["seconds_start"], want["seconds_total"])


def test_make_shards_command_line(folder, tmp_path, capsys):
    """`python -m musicdiff.data.make_shards in=... out=... shard_size=...`: bad input is one clear line."""
    out = tmp_path / "s"
    summary = make_shards_main([f"in={folder}", f"out={out}", "shard_size=5", "progress=false"])
    assert summary["shards"] == 2 and json.loads((out / "shards.json").read_text())["shards"][1]["num_samples"] == 2
    with pytest.raises(FileExistsError, match="shards.json exists"):
        make_shards_main([f"in={folder}", f"out={out}", "progress=false"])
    with pytest.raises(SystemExit, match="shard_size must be a whole number"):
        make_shards_main([f"in={folder}", f"out={out}2", "shard_size=many"])
    with pytest.raises(SystemExit, match="expected key=value"):
        make_shards_main([f"input={folder}"])


def test_encode_from_audio_shards_equals_encode_from_the_folder(folder, tmp_path):
    """musicdiff-encode dataset=webdataset: audio shards encode to the latents, paths, timing and captions
    of the folder they came from; latent shards are refused with one line."""
    make_shards(folder, tmp_path / "shards", shard_size=3, progress=False)
    ae = StubAutoencoder()
    shards = WebDatasetShards(str(tmp_path / "shards"), "audio", SR, 2, 1.0, prompt_builder=CAPTIONS)
    a = encode_dataset(folder, ae, tmp_path / "from_folder", shard_size=4, progress=False)
    b = encode_dataset(shards, ae, tmp_path / "from_shards", shard_size=4, progress=False)
    assert a["items"] == b["items"] == 7 and a["normalised"] == b["normalised"] == 1
    ref = LatentShardDataset(tmp_path / "from_folder", SR, 2, window_seconds=1.0, random_crop=False,
                             prompt_builder=CAPTIONS)
    got = LatentShardDataset(tmp_path / "from_shards", SR, 2, window_seconds=1.0, random_crop=False,
                             prompt_builder=CAPTIONS)
    want = {Path(it["path"]).name: it for it in (ref[i] for i in range(len(ref)))}
    for it in (got[i] for i in range(len(got))):
        w = want[Path(it["path"]).name]
        assert torch.allclose(it["latents"], w["latents"], atol=1e-6)
        assert (it["prompt"], it["seconds_total"]) == (w["prompt"], w["seconds_total"])
    root = _latent_shards(tmp_path / "lat", [[(9, 0.0)]])
    with pytest.raises(TypeError, match="encodes audio: dataset WebDatasetShards holds latents"):
        encode_dataset(_latents(root), StubAutoencoder(), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
