"""GenerationWriter: clips with their request in the file metadata, one manifest record each."""

from __future__ import annotations

import contextlib
import json
import resource
import signal

import pytest
import soundfile as sf
import torch

from musicdiff.sampling.outputs import GENERATIONS_MANIFEST, GenerationWriter
from musicdiff.sampling.requests import GenerationRequest


@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_writes_clips_metadata_and_manifest(tmp_path, fmt):
    audio = 0.5 * torch.sin(torch.linspace(0, 200, 800)).repeat(2, 1)
    req = GenerationRequest("warm pads", duration=0.1, seed=7, negative_prompt="noise")
    with GenerationWriter(tmp_path / "out", 8000, fmt, digest="abc", append=False) as w:
        path = w.write("00000_seed7", audio, req, split="in_distribution")
    assert path == tmp_path / "out" / f"00000_seed7.{fmt}"
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, GENERATIONS_MANIFEST])  # no temp file
    data, sr = sf.read(path, always_2d=True)
    assert sr == 8000 and data.shape == (800, 2)
    assert abs(data[:, 0] - audio[0].numpy()).max() < 1e-3  # 16-bit PCM
    with sf.SoundFile(path) as fh:
        assert fh.title == "warm pads"
        assert json.loads(fh.comment) == {"prompt": "warm pads", "seed": 7, "duration": 0.1,
                                          "negative_prompt": "noise", "config_hash": "abc"}
    record = json.loads((tmp_path / "out" / GENERATIONS_MANIFEST).read_text())
    assert record == {"path": path.name, "prompt": "warm pads", "seed": 7, "duration": 0.1,
                      "split": "in_distribution", "config_hash": "abc"}


def test_append_overwrite_and_errors(tmp_path):
    audio = torch.zeros(1, 10)
    req = GenerationRequest("x", seed=1)
    for append, expected in ((True, 1), (True, 2), (False, 1)):
        with GenerationWriter(tmp_path, 10, "wav", append=append) as w:
            w.write("a", audio, req)
        assert len((tmp_path / GENERATIONS_MANIFEST).read_text().splitlines()) == expected
    with pytest.raises(ValueError, match="format must be one of"):
        GenerationWriter(tmp_path, 10, "mp3")
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        GenerationWriter(tmp_path, 10).write("b", audio, req)


def _records(out_dir):
    return [json.loads(line) for line in (out_dir / GENERATIONS_MANIFEST).read_text().splitlines()]


def _assert_consistent(out_dir, n):
    """Every record names its own file, whose metadata holds the record's prompt and seed; no stray files."""
    records = _records(out_dir)
    assert len(records) == n and len({r["path"] for r in records}) == n
    for r in records:
        with sf.SoundFile(out_dir / r["path"]) as fh:
            meta = json.loads(fh.comment)
        assert (meta["prompt"], meta["seed"]) == (r["prompt"], r["seed"])
        level = float(r["prompt"].split()[-1])  # each clip's constant level is named by its prompt
        assert abs(sf.read(out_dir / r["path"])[0].mean() - level) < 1e-3
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([r["path"] for r in records] + [GENERATIONS_MANIFEST])


def test_second_run_into_the_same_folder_keeps_the_first(tmp_path):
    """Issue 13: a second run used to overwrite `00000_seed0.wav` while the manifest kept both records."""
    for run, level in enumerate((0.25, -0.5)):
        with GenerationWriter(tmp_path, 100, "wav", digest=f"run{run}") as w:
            for i in range(3):
                req = GenerationRequest(f"run{run} {level}", seed=i)
                path = w.write(f"{i:05d}_seed0", torch.full((1, 50), level), req)
                assert path.name == (f"{i:05d}_seed0.wav" if run == 0 else f"{i:05d}_seed0-1.wav")
    _assert_consistent(tmp_path, 6)


def _concurrent_writer(out_dir, level, barrier):
    barrier.wait()
    with GenerationWriter(out_dir, 100, "wav") as w:
        for i in range(25):
            w.write(f"{i:05d}_seed{i}", torch.full((1, 400), level), GenerationRequest(f"p {level}", seed=i))


def test_two_concurrent_writers_share_a_folder(tmp_path):
    """Two processes writing the same stems into one folder: 50 clips, 50 records, each pointing at its clip."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # forked: no second torch import
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_concurrent_writer, args=(tmp_path, level, barrier)) for level in (0.25, -0.5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    _assert_consistent(tmp_path, 50)


def test_long_prompt_keeps_metadata_valid(tmp_path):
    """A prompt longer than the comment limit used to cut the JSON mid-string, losing seed and config hash."""
    prompt = "ambient drone with slowly evolving pads, " * 100 + "é\"\\"
    with GenerationWriter(tmp_path, 100, "wav", digest="cafe") as w:
        path = w.write("long", torch.zeros(1, 10), GenerationRequest(prompt, seed=2**40, negative_prompt="n" * 3000))
    with sf.SoundFile(path) as fh:
        meta = json.loads(fh.comment)
    assert meta["seed"] == 2**40 and meta["config_hash"] == "cafe" and meta["truncated"] is True
    assert prompt.startswith(meta["prompt"]) and len(meta["prompt"]) > 100
    assert _records(tmp_path)[0]["prompt"] == prompt  # the manifest keeps the full prompt


@contextlib.contextmanager
def _file_size_limit(nbytes):
    """Writes past ``nbytes`` fail with EFBIG, as they would with ENOSPC on a full disk."""
    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_disk_full_names_the_file_and_leaves_no_temp(tmp_path):
    """A write that runs out of space (here: the file-size limit) raises one OSError naming the clip."""
    audio = 0.1 * torch.randn(2, 20000)
    with GenerationWriter(tmp_path, 8000, "wav") as w:
        w.write("ok", audio[:, :100], GenerationRequest("fits", seed=0))
        with _file_size_limit(4096), pytest.raises(OSError, match=r"cannot write generated clip .*big\.wav") as info:
            w.write("big", audio, GenerationRequest("too big", seed=1))
    assert len(str(info.value).splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ok.wav", GENERATIONS_MANIFEST])
    assert [r["path"] for r in _records(tmp_path)] == ["ok.wav"]


def test_failed_record_append_leaves_no_half_line_and_no_orphan_clip(tmp_path):
    with GenerationWriter(tmp_path, 100, "wav") as w:
        w.write("first", torch.zeros(1, 10), GenerationRequest("x" * 4000, seed=0))
        size = (tmp_path / GENERATIONS_MANIFEST).stat().st_size
        with _file_size_limit(size + 50), pytest.raises(OSError, match=rf"cannot append to .*{GENERATIONS_MANIFEST}"):
            w.write("second", torch.zeros(1, 10), GenerationRequest("y" * 4000, seed=1))  # clip fits, record not
        w.write("third", torch.zeros(1, 10), GenerationRequest("z", seed=2))
    assert [r["path"] for r in _records(tmp_path)] == ["first.wav", "third.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["first.wav", "third.wav", GENERATIONS_MANIFEST])
