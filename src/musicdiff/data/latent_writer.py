"""Pre-encode an audio dataset into latent shards for DiT training (``musicdiff-encode``).

SA2 trains its DiT on autoencoder latents; encoding every file once (as stable-audio-tools'
``pre_encode.py``) removes the autoencoder from the training step. Whole files are encoded
(chunked for long ones, see ``models/autoencoder/chunking.py``); the training crop happens later
in latent space (:class:`~musicdiff.data.latent_dataset.LatentShardDataset`).

Layout of ``out_dir``::

    index.json                 autoencoder facts, shard list, done/failed files, skip counts
    shard_00000.safetensors    one tensor per file, key "<n>" → float32 [D, L_file]
    shard_00000.jsonl          one line per file: key, path, timing and metadata fields

Every file is written under a temporary name and renamed (``os.replace``) and the index is
rewritten after each shard, so an interrupted run leaves a consistent directory; rerunning skips
the files the index records (done or failed) and appends new shards.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from musicdiff.data.audio_dataset import AudioFolderDataset
from musicdiff.data.audio_io import AudioLoadError
from musicdiff.data.base import AudioSource, FileDataset, audio_source_of
from musicdiff.models.inference import fast_inference

log = logging.getLogger("musicdiff.data")

INDEX_NAME = "index.json"
FORMAT = "musicdiff-latents"
_AE_KEYS = ("sample_rate", "io_channels", "latent_dim", "downsampling_ratio")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_index(out_dir: str | Path) -> dict[str, Any]:
    """The index of a latent directory (raises FileNotFoundError / ValueError)."""
    path = Path(out_dir) / INDEX_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no latent index at {path}: run musicdiff-encode (encode_dataset) first")
    index = json.loads(path.read_text(encoding="utf-8"))
    if index.get("format") != FORMAT:
        raise ValueError(f"{path} is not a musicdiff latent index (format={index.get('format')!r})")
    return index


def _new_index(autoencoder: nn.Module, root: Path) -> dict[str, Any]:
    return {"format": FORMAT, "version": 1, **{k: int(getattr(autoencoder, k)) for k in _AE_KEYS},
            "root": str(root), "shards": [], "done": {}, "failed": {}, "skipped": {}}


class _ShardWriter:
    def __init__(self, out_dir: Path, index: dict[str, Any]) -> None:
        self.out_dir, self.index = out_dir, index
        self.tensors: dict[str, torch.Tensor] = {}
        self.lines: list[dict[str, Any]] = []

    def add(self, latents: torch.Tensor, record: dict[str, Any]) -> None:
        key = str(len(self.tensors))
        self.tensors[key] = latents.detach().to("cpu", torch.float32).contiguous()
        self.lines.append({"key": key, **record})

    def flush(self) -> None:
        name = f"shard_{len(self.index['shards']):05d}"
        if self.tensors:
            tmp = self.out_dir / f"{name}.safetensors.tmp"
            save_file(self.tensors, str(tmp))
            os.replace(tmp, self.out_dir / f"{name}.safetensors")
            text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in self.lines)
            _write_atomic(self.out_dir / f"{name}.jsonl", text.encode("utf-8"))
            self.index["shards"].append({"name": name, "num_items": len(self.lines)})
            for line in self.lines:
                self.index["done"][line["path"]] = name
        _write_atomic(self.out_dir / INDEX_NAME, json.dumps(self.index, indent=1, sort_keys=True).encode("utf-8"))
        self.tensors, self.lines = {}, []


@torch.no_grad()
def encode_dataset(
    dataset_or_folder: FileDataset | AudioSource | str | Path,
    autoencoder: nn.Module,
    out_dir: str | Path,
    shard_size: int = 256,
    batch_size: int = 1,
    chunked: bool = True,
    progress: bool = True,
    chunk_size: int = 128,
    overlap: int = 32,
    sample: bool = False,
    seed: int = 0,
    format: str = "safetensors",
) -> dict[str, Any]:
    """Encode every usable file of a dataset (or folder) into latent shards; resumable.

    Args:
        dataset_or_folder: a :class:`~musicdiff.data.base.FileDataset` with audio (the configured
            dataset: its :meth:`~musicdiff.data.base.FileDataset.audio_source`), an
            :class:`~musicdiff.data.base.AudioSource`, or a folder read at the autoencoder's sample
            rate and channel count.
        autoencoder: has ``sample_rate``, ``io_channels``, ``latent_dim``, ``downsampling_ratio``,
            ``encode(audio, sample=...)`` and ``encode_chunked(audio, chunk_size, overlap, sample=...)``.
        out_dir: output directory (created; an existing index is resumed).
        shard_size: files per shard.
        batch_size: files encoded together (zero-padded to the longest; each is trimmed back).
        chunked: encode files longer than ``chunk_size`` latents in overlapping chunks.
        progress: show a progress bar.
        chunk_size: chunk length in latent frames.
        overlap: chunk overlap in latent frames.
        sample: sample the VAE posterior (else its mean).
        seed: torch seed for posterior sampling.
        format: ``safetensors`` (the layout above) or ``webdataset`` (tar shards of latents, padding
            masks, timing and captions, see :mod:`musicdiff.data.webdataset_write`).

    Returns:
        Summary ``{"encoded", "already_done", "items", "shards", "skipped": {reason: count}, "normalised"}``;
        ``normalised`` counts the files encoded by this call that were above full scale and scaled
        by ``1 / peak`` (the rule the training dataset applies too, see
        :func:`~musicdiff.data.audio_io.full_scale_gain`); their shard records carry ``"gain"``.
    """
    if shard_size <= 0 or batch_size <= 0:
        raise ValueError(f"shard_size and batch_size must be positive, got {shard_size}, {batch_size}")
    if format not in ("safetensors", "webdataset"):
        raise ValueError(f"format must be safetensors or webdataset, got {format!r}")
    sr, channels = int(autoencoder.sample_rate), int(autoencoder.io_channels)
    ratio = int(autoencoder.downsampling_ratio)
    if isinstance(dataset_or_folder, (str, Path)):
        dataset: AudioSource = AudioFolderDataset(dataset_or_folder, sr, channels, window_seconds=1.0,
                                                  random_crop=False)
    else:
        dataset = audio_source_of(dataset_or_folder)  # TypeError for datasets without audio
        if (dataset.sample_rate, dataset.channels) != (sr, channels):
            raise ValueError(f"dataset gives {dataset.sample_rate} Hz x {dataset.channels} ch but the autoencoder "
                             f"expects {sr} Hz x {channels} ch")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if (out / INDEX_NAME).is_file():
        index = read_index(out)
        for k in _AE_KEYS:
            if int(index[k]) != int(getattr(autoencoder, k)):
                raise ValueError(f"{out} was encoded with {k}={index[k]}, this autoencoder has "
                                 f"{getattr(autoencoder, k)}: use a new out_dir")
    else:
        index = _new_index(autoencoder, dataset.root)
        if format == "webdataset":
            index["shard_format"] = "webdataset"
    if index.get("shard_format", "safetensors") != format:
        raise ValueError(f"{out} holds {index.get('shard_format', 'safetensors')} shards, not {format}: "
                         f"use a new out_dir")
    skipped = Counter(dataset.skipped)
    if format == "webdataset":
        from musicdiff.data.webdataset_write import TarShardWriter

        writer: _ShardWriter = TarShardWriter(out, index)
    else:
        writer = _ShardWriter(out, index)
    todo, already = [], 0
    for i in range(len(dataset)):
        rel = dataset.relpath(i)
        if rel in index["done"] or rel in index["failed"]:
            already += rel in index["done"]
            if rel in index["failed"]:
                skipped[index["failed"][rel]] += 1
            continue
        todo.append(i)
    log.info("encoding %d files into %s (%d already done)", len(todo), out, already)
    device = next((p.device for p in autoencoder.parameters()), torch.device("cpu"))
    was_training = autoencoder.training
    autoencoder.eval()
    torch.manual_seed(seed)
    encoded = normalised = 0
    bar = tqdm(total=len(todo), disable=not progress, desc="encode", dynamic_ncols=True)
    try:
        pos = 0
        while pos < len(todo):
            batch: list[tuple[int, torch.Tensor]] = []
            while pos < len(todo) and len(batch) < batch_size:
                i = todo[pos]
                pos += 1
                bar.update(1)
                try:
                    batch.append((i, dataset.load_full(i)))
                except AudioLoadError as e:
                    skipped[e.reason] += 1
                    index["failed"][dataset.relpath(i)] = e.reason
                    log.warning("skipping %s", e)
            if not batch:
                continue
            for (i, audio), latents in zip(batch, _encode_batch(autoencoder, [a for _, a in batch], ratio, device,
                                                               chunked, chunk_size, overlap, sample)):
                rel = dataset.relpath(i)
                if not torch.isfinite(latents).all():
                    skipped["non_finite_latents"] += 1
                    index["failed"][rel] = "non_finite_latents"
                    log.warning("skipping %s: non-finite latents", rel)
                    continue
                frames = audio.shape[-1]
                gain = dataset.gain(i)
                writer.add(latents, {"path": rel, "num_frames": frames, "num_latents": int(latents.shape[-1]),
                                     "seconds_total": float(math.ceil(frames / sr)), "duration": frames / sr,
                                     "metadata": dataset.metadata(i), **({"gain": gain} if gain < 1.0 else {})})
                encoded += 1
                normalised += gain < 1.0
                if len(writer.tensors) >= shard_size:
                    index["skipped"] = dict(skipped)
                    writer.flush()
        index["skipped"] = dict(skipped)
        writer.flush()
    finally:
        bar.close()
        autoencoder.train(was_training)
    items = sum(s["num_items"] for s in index["shards"])
    log.info("encoded %d files (%d total in %d shards), skipped %s, scaled down to full scale %d", encoded, items,
             len(index["shards"]), dict(skipped), normalised)
    return {"encoded": encoded, "already_done": already, "items": items, "shards": len(index["shards"]),
            "skipped": dict(skipped), "normalised": normalised}


def _encode_batch(autoencoder: nn.Module, audios: list[torch.Tensor], ratio: int, device: torch.device,
                  chunked: bool, chunk_size: int, overlap: int, sample: bool) -> list[torch.Tensor]:
    """Latents ``[D, ceil(T_i / ratio)]`` of each ``[C, T_i]`` audio (with the VAE's inference fast paths)."""
    with fast_inference(autoencoder, packed_gemm=False):
        return _encode_plain(autoencoder, audios, ratio, device, chunked, chunk_size, overlap, sample)


def _encode_plain(autoencoder: nn.Module, audios: list[torch.Tensor], ratio: int, device: torch.device,
                  chunked: bool, chunk_size: int, overlap: int, sample: bool) -> list[torch.Tensor]:
    lengths = [a.shape[-1] for a in audios]
    padded = -(-max(lengths) // ratio) * ratio
    if chunked and padded // ratio > chunk_size:  # long files: one at a time, in chunks
        out = []
        for a, n in zip(audios, lengths):
            z = autoencoder.encode_chunked(a[None].to(device), chunk_size, overlap, sample=sample)
            out.append(z[0, :, : -(-n // ratio)])
        return out
    x = torch.zeros(len(audios), audios[0].shape[0], padded)
    for j, a in enumerate(audios):
        x[j, :, : a.shape[-1]] = a
    z = autoencoder.encode(x.to(device), sample=sample)
    return [z[j, :, : -(-n // ratio)] for j, n in enumerate(lengths)]
