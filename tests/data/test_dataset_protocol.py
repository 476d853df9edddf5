"""The dataset protocol (data/base.py): a new dataset class works with encode, memorization and the Trainer
without any of them naming it."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import torch
from torch.utils.data import Dataset, TensorDataset

from musicdiff.data.base import FileDataset, SourceFile, begin_epoch, training_loader
from musicdiff.data.collate import collate
from musicdiff.data.latent_dataset import LatentShardDataset
from musicdiff.data.latent_writer import encode_dataset, read_index
from musicdiff.data.prompts import PromptBuilder
from musicdiff.memorization.inputs import training_items
from musicdiff.training.data_order import ResumableShardedSampler
from tests.data.helpers import tone
from tests.data.test_latent_writer import RATIO, SR, StubAutoencoder


class PlaylistDataset(FileDataset, Dataset):
    """A dataset a newcomer might add: WAV files listed in a JSON playlist ``[{path, caption}]``."""

    def __init__(self, playlist: str | Path, sample_rate: int = SR, channels: int = 2, window_frames: int = 4096,
                 seed: int = 0) -> None:
        self.root = Path(playlist).parent
        self.entries = json.loads(Path(playlist).read_text())
        self.sample_rate, self.channels, self.window, self.seed = sample_rate, channels, window_frames, seed
        self.skipped: Counter[str] = Counter()
        self.prompt_builder = PromptBuilder(caption_prob=1.0)
        self.epochs: list[int] = []

    def __len__(self) -> int:
        return len(self.entries)

    def relpath(self, idx: int) -> str:
        return self.entries[idx]["path"]

    def metadata(self, idx: int) -> dict[str, Any]:
        return {"caption": self.entries[idx]["caption"]}

    def load_full(self, idx: int) -> torch.Tensor:
        audio, _ = sf.read(self.root / self.relpath(idx), dtype="float32", always_2d=True)
        return torch.from_numpy(audio.T.copy()).expand(self.channels, -1).contiguous()

    def gain(self, idx: int) -> float:
        return 1.0

    def __getitem__(self, idx: int) -> dict[str, Any]:
        audio = self.load_full(idx)[:, : self.window]
        out = torch.zeros(self.channels, self.window)
        out[:, : audio.shape[1]] = audio
        mask = torch.arange(self.window) < audio.shape[1]
        return {"audio": out, "padding_mask": mask,
                "prompt": self.prompt_builder(self.metadata(idx), random.Random(idx)), "seconds_start": 0.0, "seconds_total": float(math.ceil(audio.shape[1] / self.sample_rate))}

    def source_files(self) -> list[SourceFile]:
        return [SourceFile(self.relpath(i), self.root / self.relpath(i), self.metadata(i)) for i in range(len(self))]

    def audio_source(self) -> PlaylistDataset:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)


@pytest.fixture()
def playlist(tmp_path):
    entries = []
    for i, (freq, seconds) in enumerate([(220.0, 0.5), (440.0, 0.3), (330.0, 0.7)]):
        sf.write(tmp_path / f"take{i}.wav", tone(freq, SR, seconds), SR)
        entries.append({"path": f"take{i}.wav", "caption": f"a {freq:.0f} Hz tone"})
    (tmp_path / "playlist.json").write_text(json.dumps(entries))
    return tmp_path / "playlist.json"


def test_new_dataset_is_encoded_and_its_latents_point_back_at_its_files(playlist, tmp_path):
    ds = PlaylistDataset(playlist)
    summary = encode_dataset(ds, StubAutoencoder(), tmp_path / "latents", progress=False)
    assert summary["encoded"] == 3 and summary["skipped"] == {}
    index = read_index(tmp_path / "latents")
    assert sorted(index["done"]) == ["take0.wav", "take1.wav", "take2.wav"] and index["root"] == str(playlist.parent)
    latents = LatentShardDataset(tmp_path / "latents", SR, 2, window_seconds=0.5)
    lengths = {s.name: math.ceil(sf.info(s.path).frames / RATIO) for s in ds.source_files()}
    assert {rec["path"]: rec["num_latents"] for _, rec in latents.items} == lengths
    # the memorization report embeds the source audio of both datasets, with the same names and captions
    items, skipped = training_items(ds)
    latent_items, latent_skipped = training_items(latents)
    assert [(it.name, it.prompt, it.path) for it in items] == [
        (f"take{i}.wav", f"a {f} Hz tone", str(playlist.parent / f"take{i}.wav"))
        for i, f in enumerate((220, 440, 330))]
    assert sorted((it.name, it.prompt, it.path) for it in latent_items) == sorted(
        (it.name, it.prompt, it.path) for it in items)
    assert not skipped and not latent_skipped
    # a latent dataset has no audio to encode: one line naming it
    with pytest.raises(TypeError, match="LatentShardDataset holds no audio files"):
        encode_dataset(latents, StubAutoencoder(), tmp_path / "again", progress=False)


def test_missing_source_files_are_counted_not_embedded(playlist):
    (playlist.parent / "take1.wav").unlink()
    items, skipped = training_items(PlaylistDataset(playlist))
    assert [it.name for it in items] == ["take0.wav", "take2.wav"] and skipped == {"missing_audio": 1}
    with pytest.raises(TypeError, match="memorization needs a dataset of conf/dataset"):
        training_items(TensorDataset(torch.zeros(2)))


def test_trainer_hooks_go_through_the_protocol(playlist):
    ds = PlaylistDataset(playlist)
    sampler = ResumableShardedSampler(len(ds), micro_batch=2, seed=0)
    begin_epoch(ds, 3)
    batches = list(training_loader(ds, sampler, batch_size=2, num_workers=0, collate_fn=collate))
    assert ds.epochs == [3] and len(batches) == 1 and batches[0]["audio"].shape == (2, 2, 4096)
    assert batches[0]["metadata"][0]["prompt"].endswith("Hz tone")

    class OwnLoader(PlaylistDataset):  # a streaming dataset builds its loader from the sampler's position
        def make_loader(self, sampler, batch_size, num_workers, collate_fn, pin_memory=False):
            return [{"from": "own loader", "start": sampler.start_batch}]

    assert training_loader(OwnLoader(playlist), sampler, 2, 0, collate) == [{"from": "own loader", "start": 0}]
    plain = TensorDataset(torch.arange(4.0))
    begin_epoch(plain, 1)  # plain torch datasets have no epoch state and get the map-style loader
    batches = list(training_loader(plain, ResumableShardedSampler(4, micro_batch=2, seed=0), 2, 0, None))
    assert len(batches) == 2 and sorted(v for b in batches for v in b[0].tolist()) == [0.0, 1.0, 2.0, 3.0]
