"""Local audio shards as a list of files, for ``musicdiff-encode dataset=webdataset``.

``encode_dataset`` reads whole files by index (``len``, ``relpath``, ``metadata``, ``load_full``,
``gain``), as :class:`~musicdiff.data.audio_dataset.AudioFolderDataset` offers them. This gives the
same interface over the samples of local tar shards, opened with random access (tar headers are
read once; each sample's members are read when it is encoded), so audio shards made with
:mod:`musicdiff.data.make_shards` or by other tools can be pre-encoded into latent shards.
"""

from __future__ import annotations

import os
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import torch
from webdataset.tariterators import base_plus_ext

from musicdiff.data.audio_io import AudioLoadError
from musicdiff.data.webdataset_io import SampleError, _is_local, _local_path, decode_audio, sample_metadata


class ShardFiles:
    """The samples of local audio shards, indexable like an audio folder.

    Args:
        urls: local shard paths.
        sample_rate: rate audio is decoded at.
        channels: channel count audio is converted to.
        multichannel: ``first`` or ``downmix``.

    Raises:
        ValueError: a shard that is not a local file (encoding needs random access).
    """

    def __init__(self, urls: Sequence[str], sample_rate: int, channels: int, multichannel: str = "first") -> None:
        remote = [u for u in urls if not _is_local(u)]
        if remote:
            raise ValueError(f"musicdiff-encode reads local shards only (random access), got {remote[0]}: copy "
                             f"the shards to a filesystem first")
        self.sample_rate, self.channels, self.multichannel = int(sample_rate), int(channels), multichannel
        self.paths = [_local_path(u) for u in urls]
        self.root = Path(os.path.commonpath([str(p.parent.resolve()) for p in self.paths]))
        self.skipped: Counter[str] = Counter()
        self._gains: dict[int, float] = {}
        self._entries: list[tuple[int, str, dict[str, tarfile.TarInfo]]] = []  # (shard, key, {ext: member})
        self._text: list[dict[str, bytes]] = []  # the json/txt members, read once
        for s, path in enumerate(self.paths):
            with tarfile.open(path) as tar:
                members: dict[str, dict[str, tarfile.TarInfo]] = {}
                for m in tar.getmembers():
                    key, ext = base_plus_ext(m.name)
                    if m.isreg() and key is not None:
                        members.setdefault(key, {})[ext.lower()] = m
                for key, exts in members.items():
                    self._entries.append((s, key, exts))
                    self._text.append({e: tar.extractfile(m).read() for e, m in exts.items() if e in ("json", "txt")})

    def __len__(self) -> int:
        return len(self._entries)

    def _sample(self, idx: int) -> tuple[dict[str, Any], str]:
        s, key, exts = self._entries[idx]
        with tarfile.open(self.paths[s]) as tar:
            sample = {ext: tar.extractfile(m).read() for ext, m in exts.items()}
        return {"__key__": key, **sample}, f"{self.paths[s]}#{key}"

    def _meta(self, idx: int) -> dict[str, Any]:
        s, key, _ = self._entries[idx]
        try:
            return sample_metadata(self._text[idx], f"{self.paths[s]}#{key}")
        except SampleError:  # reported (and the sample skipped) by load_full
            return {}

    def relpath(self, idx: int) -> str:
        """The sample's recorded ``path`` (make_shards), else ``<shard name>/<key>``."""
        s, key, _ = self._entries[idx]
        return str(self._meta(idx).get("path") or f"{self.paths[s].name}/{key}")

    def metadata(self, idx: int) -> dict[str, Any]:
        """Caption and tag fields of sample ``idx`` (its JSON, ``txt`` as caption), without ``path``."""
        return {k: v for k, v in self._meta(idx).items() if k != "path"}

    def load_full(self, idx: int) -> torch.Tensor:
        """The whole audio of sample ``idx`` with the full-scale gain applied.

        Raises:
            AudioLoadError: the sample's audio or metadata cannot be used.
        """
        sample, where = self._sample(idx)
        try:
            sample_metadata(sample, where)
            audio, _, _, gain = decode_audio(sample, self.sample_rate, self.channels, self.multichannel, where)
        except SampleError as e:
            raise AudioLoadError(where, e.reason, str(e)) from e
        self._gains[idx] = gain
        return audio if gain == 1.0 else audio * gain

    def gain(self, idx: int) -> float:
        """The full-scale gain of sample ``idx`` (known once it was loaded)."""
        if idx not in self._gains:
            self.load_full(idx)
        return self._gains[idx]


def as_encode_source(dataset: Any) -> ShardFiles:
    """The :class:`ShardFiles` of a :class:`~musicdiff.data.webdataset.WebDatasetShards` of audio."""
    if getattr(dataset, "kind", None) != "audio":
        raise TypeError(f"musicdiff-encode encodes audio: dataset {type(dataset).__name__} holds "
                        f"{getattr(dataset, 'kind', 'no audio')}")
    return ShardFiles(dataset.urls, dataset.sample_rate, dataset.channels, dataset.multichannel)


__all__ = ["ShardFiles", "as_encode_source"]
