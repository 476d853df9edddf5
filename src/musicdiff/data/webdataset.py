"""``dataset=webdataset``: training windows streamed from WebDataset tar shards (audio or latents).

The streaming counterpart of :class:`~musicdiff.data.audio_dataset.AudioFolderDataset` (audio
shards, the stable-audio-tools / LAION layout) and of
:class:`~musicdiff.data.latent_dataset.LatentShardDataset` (latent shards written by
``musicdiff-encode format=webdataset``): each sample becomes exactly the item those datasets
yield (docs/ARCHITECTURE.md, "Tensors and batches"): a random window zero-padded to the
training window with its padding mask, the SA2 timing labels (Evans et al. 2024, §3.1)
``seconds_start = floor(offset / sr)`` and ``seconds_total = ceil(file frames / sr)``, and a prompt
from the same :class:`~musicdiff.data.prompts.PromptBuilder`. Audio above full scale is scaled by
:func:`~musicdiff.data.audio_io.full_scale_gain` of the whole file, as in the folder dataset.

A latent crop starting at latent frame ``s`` of a sample that itself starts ``seconds_start``
seconds into its file gets ``seconds_start + s * ratio / sr`` (floored): the crop's own position,
not the stored one (stable-audio-tools PR #219 fixed exactly this for its pre-encoded dataset).

Which samples a process and DataLoader worker reads, the per-epoch shuffle and the exact resume
are in :mod:`musicdiff.data.webdataset_plan`; the Trainer asks for the loader through
:meth:`WebDatasetShards.make_loader`. A bad sample (unreadable or non-finite audio, invalid or
missing caption, NaN latents) is logged, counted in ``self.skipped`` and replaced by a fresh crop
of the worker's previous good sample, so every rank still gets the same number of batches; a
truncated tar is logged with its URL (``truncated_shard``) and its missing samples are replaced
the same way.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from musicdiff.data.audio_io import MULTICHANNEL_MODES, is_silent
from musicdiff.data.base import AudioSource, FileDataset, SourceFile, item_fields
from musicdiff.data.prompts import PromptBuilder
from musicdiff.data.webdataset_io import (
    SampleError, decode_audio, decode_latents, read_shard, register_fsspec, resolve_shards, sample_metadata,
)
from musicdiff.data.webdataset_plan import WorkerPlan, worker_plan

log = logging.getLogger("musicdiff.data")

KINDS = ("audio", "latents")


class WebDatasetShards(FileDataset, IterableDataset):
    """Random training windows from WebDataset tar shards.

    Args:
        urls: shard directory (with ``shards.json`` / ``index.json``), brace pattern
            (``/data/train-{000000..000999}.tar``; ``pipe:...``, ``s3://...`` ...) or list of URLs.
        kind: ``audio`` (audio + json/txt captions) or ``latents`` (musicdiff-encode shards).
        sample_rate: model (autoencoder) sample rate; audio is resampled to it.
        channels: model channel count (audio is converted to it).
        window_seconds: crop length in seconds.
        window_multiple: audio: round the window up to a multiple of this many frames.
        downsampling_ratio: latents: audio frames per latent frame.
        latent_dim: latents: expected latent dim (checked per sample; None = any).
        index: JSON file with per-shard sample counts (else the directory's, else counted at start).
        random_crop: random window offset (else the start of each sample).
        shuffle_buffer: raw samples each worker's shuffle buffer holds (memory: that many stored samples;
            0: stream order).
        prompt_builder: prompts from the metadata; ``None`` → SA2 defaults.
        seed: seed of the shard order, shuffle buffers, crops and prompts.
        multichannel: ``first`` or ``downmix`` for audio with more channels than ``channels``.
        require_caption: a sample with neither caption nor usable metadata field is skipped
            (``missing_caption``) instead of training with an empty prompt.
        skip_silent: replace silent audio crops (``silent_crop``).
        silence_threshold_db: peak level below which a crop counts as silent.
    """

    def __init__(self, urls: str | Sequence[str], kind: str, sample_rate: int, channels: int,
                 window_seconds: float, window_multiple: int = 1, downsampling_ratio: int | None = None,
                 latent_dim: int | None = None, index: str | None = None, random_crop: bool = True,
                 shuffle_buffer: int = 64, prompt_builder: PromptBuilder | None = None, seed: int = 0,
                 multichannel: str = "first", require_caption: bool = True, skip_silent: bool = True,
                 silence_threshold_db: float = -60.0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"dataset.kind must be one of {KINDS}, got {kind!r}")
        if sample_rate <= 0 or channels <= 0 or window_seconds <= 0 or window_multiple <= 0:
            raise ValueError(f"sample_rate, channels, window_seconds and window_multiple must be positive, got "
                             f"{sample_rate}, {channels}, {window_seconds}, {window_multiple}")
        if multichannel not in MULTICHANNEL_MODES:
            raise ValueError(f"dataset.multichannel must be one of {MULTICHANNEL_MODES}, got {multichannel!r}")
        if kind == "latents" and not (downsampling_ratio and downsampling_ratio > 0):
            raise ValueError("kind=latents needs the autoencoder's downsampling_ratio")
        if shuffle_buffer < 0:
            raise ValueError(f"dataset.shuffle_buffer must be >= 0, got {shuffle_buffer}")
        self.kind, self.sample_rate, self.channels = kind, int(sample_rate), int(channels)
        self.window_seconds, self.ratio = float(window_seconds), int(downsampling_ratio or 1)
        self.latent_dim = None if latent_dim is None else int(latent_dim)
        frames = round(window_seconds * sample_rate)
        if kind == "audio":
            self.window = -(-frames // window_multiple) * window_multiple
        else:
            self.window = math.ceil(frames / self.ratio)
        self.random_crop, self.shuffle_buffer, self.seed = bool(random_crop), int(shuffle_buffer), int(seed)
        self.multichannel, self.require_caption = multichannel, bool(require_caption)
        self.skip_silent, self.silence_threshold_db = bool(skip_silent), float(silence_threshold_db)
        self.prompt_builder = prompt_builder if prompt_builder is not None else PromptBuilder()
        self.urls, self.counts = resolve_shards(urls, index)
        self.skipped: Counter[str] = Counter()
        self.epoch = 0
        self._position: dict[str, int] = {}
        log.info("%d %s shards, %d samples", len(self.urls), kind, len(self))

    # ------------------------------------------------------------------ trainer protocol
    def __len__(self) -> int:
        return sum(self.counts)

    def source_files(self) -> list[SourceFile]:
        """Not files: the samples live inside tar shards; the memorization report needs a folder."""
        raise TypeError(f"dataset {type(self).__name__} streams samples from tar shards ({self.urls[0]} ...), "
                        f"not audio files: point the memorization report at the audio folder (dataset=audio_dir)")

    def audio_source(self) -> AudioSource:
        """The audio samples of local shards as whole files (``kind=audio`` only)."""
        from musicdiff.data.webdataset_files import as_encode_source

        return as_encode_source(self)

    def set_epoch(self, epoch: int) -> None:
        """Shard order, shuffle buffers and crops of the next loader follow ``epoch`` (called by the Trainer)."""
        self.epoch = int(epoch)

    def set_position(self, *, rank: int, world_size: int, items_per_rank: int, consumed_items: int,
                     batch_size: int, workers: int, epoch: int | None = None) -> None:
        """Fix what the next iteration reads: this rank's share of the epoch, from ``consumed_items`` on."""
        if epoch is not None:
            self.epoch = int(epoch)
        self._position = {"rank": int(rank), "world_size": int(world_size), "items_per_rank": int(items_per_rank),
                          "consumed_items": int(consumed_items), "batch_size": int(batch_size),
                          "workers": max(1, int(workers))}

    def make_loader(self, sampler, batch_size: int, num_workers: int, collate_fn: Callable,
                    pin_memory: bool = False) -> DataLoader:
        """The DataLoader of the Trainer for the position of ``sampler`` (a ResumableShardedSampler).

        The sampler holds the rank, world size, epoch, batches per epoch and the resume batch;
        the epoch has as many global batches as the map-style datasets' (``len // global batch``).
        """
        per_step = sampler.micro_batch  # items per rank per optimiser step
        self.set_position(rank=sampler.rank, world_size=sampler.world_size, epoch=sampler.epoch,
                          items_per_rank=sampler.batches_per_epoch() * per_step,
                          consumed_items=sampler.start_batch * per_step, batch_size=batch_size, workers=num_workers)
        return DataLoader(self, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn,
                          drop_last=True, pin_memory=pin_memory, persistent_workers=False)

    # ------------------------------------------------------------------ iteration
    def plan(self) -> WorkerPlan:
        """This DataLoader worker's :class:`~musicdiff.data.webdataset_plan.WorkerPlan`."""
        info = get_worker_info()
        pos = self._position or {"rank": 0, "world_size": 1, "items_per_rank": len(self), "consumed_items": 0,
                                 "batch_size": 1, "workers": 1}
        workers = info.num_workers if info is not None else 1
        if workers != pos["workers"]:
            raise RuntimeError(f"the loader has {workers} workers, the position was set for {pos['workers']}")
        return worker_plan(self.counts, seed=self.seed, epoch=self.epoch, rank=pos["rank"],
                           world_size=pos["world_size"], items_per_rank=pos["items_per_rank"],
                           batch_size=pos["batch_size"], workers=workers, worker=info.id if info else 0,
                           consumed_items=pos["consumed_items"], buffer_size=self.shuffle_buffer)

    def _inputs(self, plan: WorkerPlan, first: int) -> Iterator[tuple[int, dict[str, Any] | None]]:
        """``(local input index, raw sample | None)`` from input ``first`` on; None = lost to a truncated tar."""
        i = 0
        for piece in plan.pieces:
            n = piece.stop - piece.start
            if i + n <= first:
                i += n
                continue
            skip = max(0, first - i)
            url, got = self.urls[piece.shard], 0
            try:
                for sample in read_shard(url, piece.start + skip):
                    yield i + skip + got, sample
                    got += 1
                    if got == n - skip:
                        break
            except Exception as e:  # noqa: BLE001 - tarfile.ReadError, OSError, a failed pipe: command ...
                self.skipped["truncated_shard"] += 1
                log.warning("truncated or corrupt shard %s after sample %d: %s; its %d missing samples are "
                            "replaced", url, piece.start + skip + got, " ".join(str(e).split())[:300],
                            n - skip - got)
            else:
                if got < n - skip:  # a tar cut at a header boundary ends "cleanly" in tarfile's stream mode
                    self.skipped["truncated_shard"] += 1
                    log.warning("truncated or corrupt shard %s: it ends after sample %d, its index counts %d; "
                                "the missing samples are replaced", url, piece.start + skip + got, piece.stop)
            for j in range(skip + got, n):
                yield i + j, None
            i += n

    def __iter__(self) -> Iterator[dict[str, Any]]:
        register_fsspec(self.urls)  # in DataLoader workers too (spawn start method)
        plan = self.plan()
        if not plan.order:
            return
        wanted = set(plan.order)
        inputs = self._inputs(plan, min(plan.order))
        held: dict[int, dict[str, Any] | None] = {}
        spare: dict[str, Any] | None = None
        owed: list[int] = []  # positions whose bad sample came before any good one
        for target in plan.order:
            while target not in held:
                i, sample = next(inputs)
                if i in wanted:
                    held[i] = sample
            sample = held.pop(target)
            position = plan.first_position + target
            item = self._item(sample, position) if sample is not None else None
            if item is not None:
                spare = sample
                for p in owed:
                    yield self._item(spare, p, replacing=True)
                owed.clear()
                yield item
            elif spare is not None:
                yield self._item(spare, position, replacing=True)
            else:
                owed.append(position)
        if owed:
            raise RuntimeError(f"no usable sample in this worker's share of {len(self.urls)} shards "
                               f"(skipped {dict(self.skipped)})")

    def _item(self, sample: dict[str, Any], position: int, replacing: bool = False) -> dict[str, Any] | None:
        """The training item of a raw sample at a stream position, or None (logged and counted) if bad."""
        where = f"{sample.get('__url__', '?')}#{sample.get('__key__', '?')}"
        for attempt in range(10 if replacing else 1):  # a replacement is a good sample: only its crop can fail
            rng = random.Random(f"{self.seed}-{self.epoch}-{position}-{int(replacing)}-{attempt}")
            try:
                meta = sample_metadata(sample, where)
                fields = _prompt_fields(meta)
                if self.require_caption and not (self.prompt_builder.caption(fields)
                                                 or self.prompt_builder.available_fields(fields)):
                    raise SampleError(where, "missing_caption", "no caption and no metadata field for a prompt")
                make = self._audio_item if self.kind == "audio" else self._latent_item
                return make(sample, meta, rng, where)
            except SampleError as e:
                self.skipped[e.reason] += 1
                log.warning("skipping %s", e)
                error = e
        if replacing:
            raise RuntimeError(f"10 crops in a row of the replacement sample failed: {error}")
        return None

    def _audio_item(self, sample: dict[str, Any], meta: dict[str, Any], rng: random.Random,
                    where: str) -> dict[str, Any]:
        def pick(total: int) -> int:
            upper = max(0, total - self.window)
            return rng.randint(0, upper) if self.random_crop and upper > 0 else 0

        crop, offset, total, gain = decode_audio(sample, self.sample_rate, self.channels, self.multichannel, where,
                                                 self.window, pick)
        if self.skip_silent and is_silent(crop, self.silence_threshold_db):
            raise SampleError(where, "silent_crop", f"offset {offset}")
        out = torch.zeros(self.channels, self.window)
        out[:, : crop.shape[1]] = crop * gain if gain != 1.0 else crop
        mask = torch.zeros(self.window, dtype=torch.bool)
        mask[: crop.shape[1]] = True
        fields = _prompt_fields(meta)
        return {**item_fields(fields), "audio": out, "padding_mask": mask, "prompt": self.prompt_builder(fields, rng),
                "seconds_start": float(math.floor(offset / self.sample_rate)),
                "seconds_total": float(math.ceil(total / self.sample_rate)), "path": str(meta.get("path", where))}

    def _latent_item(self, sample: dict[str, Any], meta: dict[str, Any], rng: random.Random,
                     where: str) -> dict[str, Any]:
        latents, stored_mask = decode_latents(sample, where)
        if self.latent_dim is not None and latents.shape[0] != self.latent_dim:
            raise SampleError(where, "unreadable_latents", f"latent dim {latents.shape[0]}, expected {self.latent_dim}")
        n = latents.shape[1] if stored_mask is None else int(stored_mask.sum())  # real frames (stored mask: a prefix)
        upper = max(0, n - self.window)
        start = rng.randint(0, upper) if self.random_crop and upper > 0 else 0
        crop = latents[:, start: min(n, start + self.window)]
        out = torch.zeros(latents.shape[0], self.window)
        out[:, : crop.shape[1]] = crop
        mask = torch.zeros(self.window, dtype=torch.bool)
        mask[: crop.shape[1]] = True
        first_second = float(meta.get("seconds_start", 0.0))
        total = meta.get("seconds_total")
        if total is None:
            total = math.ceil(n * self.ratio / self.sample_rate)
        fields = _prompt_fields(meta)
        return {**item_fields(fields), "latents": out, "padding_mask": mask, "prompt": self.prompt_builder(fields, rng),
                "seconds_start": float(math.floor(first_second + start * self.ratio / self.sample_rate)),
                "seconds_total": float(total), "path": str(meta.get("path", where))}


def _prompt_fields(meta: dict[str, Any]) -> dict[str, Any]:
    """The fields a prompt is built from: a latent shard's ``metadata`` object, else the sample's JSON."""
    inner = meta.get("metadata")
    if isinstance(inner, dict):
        caption = {"caption": meta["caption"]} if "caption" in meta and "caption" not in inner else {}
        return {**inner, **caption}
    return meta
