"""Training windows of pre-encoded latents (shards written by :mod:`musicdiff.data.latent_writer`).

The latent counterpart of :class:`~musicdiff.data.audio_dataset.AudioFolderDataset`, like
stable-audio-tools' ``PreEncodedDataset``: each item is a random crop of one file's latents,
zero-padded to the window with a padding mask, labelled with the SA2 timing conditioning —
``seconds_start = floor(crop start · ratio / sr)`` and the file's ``seconds_total`` — and a prompt
built from the stored metadata. Only the crop is read from the safetensors shard (memory-mapped).
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch.utils.data import Dataset

from musicdiff.data.audio_dataset import EpochSeededItems
from musicdiff.data.base import FileDataset, SourceFile, item_fields
from musicdiff.data.latent_writer import read_index
from musicdiff.data.prompts import PromptBuilder

log = logging.getLogger("musicdiff.data")


class LatentShardDataset(EpochSeededItems, FileDataset, Dataset):
    """Random latent windows from a directory of latent shards.

    Args:
        root: directory holding ``index.json`` and the shards.
        sample_rate: the autoencoder's sample rate (checked against the index).
        channels: the autoencoder's audio channels (checked against the index).
        window_seconds: crop length in seconds (converted to latent frames, rounded up).
        window_latents: crop length in latent frames (overrides ``window_seconds``).
        latent_dim: expected latent dim (checked against the index when given).
        random_crop: random crop start (else the start of each file).
        prompt_builder: prompts from the stored metadata; ``None`` → SA2 defaults.
        seed: seed of crops and prompts.
        max_retries: other items tried when a shard fails at read time.
    """

    def __init__(self, root: str | Path, sample_rate: int, channels: int, window_seconds: float | None = None,
                 window_latents: int | None = None, latent_dim: int | None = None, random_crop: bool = True,
                 prompt_builder: PromptBuilder | None = None, seed: int = 0, max_retries: int = 20) -> None:
        super().__init__()
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"latent folder not found: {self.root} (set dataset.root or the "
                                    f"MUSICDIFF_LATENT_DIR environment variable; create it with musicdiff-encode)")
        index = read_index(self.root)
        for name, given in (("sample_rate", sample_rate), ("io_channels", channels), ("latent_dim", latent_dim)):
            if given is not None and int(given) != int(index[name]):
                raise ValueError(f"{self.root} holds latents of an autoencoder with {name}={index[name]}, "
                                 f"the model expects {given}")
        self.sample_rate, self.channels = int(index["sample_rate"]), int(index["io_channels"])
        self.latent_dim, self.ratio = int(index["latent_dim"]), int(index["downsampling_ratio"])
        if window_latents is None:
            if window_seconds is None or window_seconds <= 0:
                raise ValueError("give a positive window_seconds or window_latents")
            window_latents = math.ceil(round(window_seconds * self.sample_rate) / self.ratio)
        if window_latents <= 0:
            raise ValueError(f"window_latents must be positive, got {window_latents}")
        self.window_latents = int(window_latents)
        self.audio_root = Path(index.get("root", ""))
        self.random_crop, self.seed, self.max_retries = bool(random_crop), int(seed), int(max_retries)
        self.prompt_builder = prompt_builder if prompt_builder is not None else PromptBuilder()
        self.skipped: Counter[str] = Counter()
        self.items: list[tuple[str, dict[str, Any]]] = []  # (shard name, record)
        for shard in index["shards"]:
            name, n = shard["name"], int(shard["num_items"])
            tensors, lines = self.root / f"{name}.safetensors", self.root / f"{name}.jsonl"
            if not tensors.is_file() or not lines.is_file():
                self.skipped["missing_shard"] += n
                log.warning("latent shard %s is missing; skipping its %d items", name, n)
                continue
            try:
                with safe_open(str(tensors), framework="pt") as f:
                    keys = set(f.keys())
            except Exception as e:  # corrupt header
                self.skipped["unreadable_shard"] += n
                log.warning("latent shard %s is unreadable (%s); skipping its %d items", name, e, n)
                continue
            for line in lines.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if rec.get("key") in keys:
                        self.items.append((name, rec))
                    else:
                        self.skipped["missing_latents"] += 1
        self._handles: dict[str, Any] = {}
        self.set_epoch(0)
        if not self.items:
            raise ValueError(f"no usable latents in {self.root}: {len(index['shards'])} shards, "
                             f"skipped {dict(self.skipped) or 'none'}")

    def __getstate__(self) -> dict[str, Any]:  # open shard handles do not cross process boundaries
        return {**self.__dict__, "_handles": {}}

    def __len__(self) -> int:
        return len(self.items)

    def source_files(self) -> list[SourceFile]:
        """The audio files the latents were encoded from (under the index's ``root``; they may be gone)."""
        return [SourceFile(rec["path"], self.audio_root / rec["path"], dict(rec.get("metadata", {})))
                for _, rec in self.items]

    def _slice(self, shard: str, key: str, start: int, stop: int) -> torch.Tensor:
        handle = self._handles.get(shard)
        if handle is None:
            handle = self._handles[shard] = safe_open(str(self.root / f"{shard}.safetensors"), framework="pt")
        return handle.get_slice(key)[:, start:stop]

    def _load_item(self, idx: int, rng) -> dict[str, Any]:
        shard, rec = self.items[idx]
        n = int(rec["num_latents"])
        upper = max(0, n - self.window_latents)
        start = rng.randint(0, upper) if self.random_crop and upper > 0 else 0
        crop = self._slice(shard, rec["key"], start, start + self.window_latents).float()
        if crop.shape[0] != self.latent_dim or not torch.isfinite(crop).all():
            raise ValueError(f"latents of {rec['path']} in {shard} are malformed or non-finite")
        w = crop.shape[1]
        latents = torch.zeros(self.latent_dim, self.window_latents)
        latents[:, :w] = crop
        mask = torch.zeros(self.window_latents, dtype=torch.bool)
        mask[:w] = True
        metadata = rec.get("metadata", {})
        return {**item_fields(metadata), "latents": latents, "padding_mask": mask,
                "prompt": self.prompt_builder(metadata, rng),
                "seconds_start": float(math.floor(start * self.ratio / self.sample_rate)),
                "seconds_total": float(rec["seconds_total"]), "path": str(self.audio_root / rec["path"])}

    def __getitem__(self, idx: int) -> dict[str, Any]:
        """A latent window: ``latents [D, L]``, ``padding_mask [L]``, prompt, timing, path."""
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} items")
        rng = self._item_rng(idx)
        for _ in range(self.max_retries + 1):
            try:
                return self._load_item(idx, rng)
            except Exception as e:  # truncated/corrupt shard, bad record (safetensors has its own error type)
                self.skipped["unreadable_latents"] += 1
                log.warning("skipping latent item %d: %s", idx, e)
                self._handles.pop(self.items[idx][0], None)
                idx = rng.randrange(len(self))
        raise RuntimeError(f"{self.max_retries + 1} latent items in a row failed to load from {self.root}")
