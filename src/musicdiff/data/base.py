"""The dataset protocol: what the Trainer, ``musicdiff-encode`` and the memorization report read.

Every training dataset of ``conf/dataset/`` is a :class:`FileDataset`: a torch dataset whose items
come from audio files (directly, or through latents encoded from them). Besides ``__len__`` and the
item dict of docs/ARCHITECTURE.md ("Tensors and batches"), it names

* its source files (:meth:`FileDataset.source_files`): relative name, path and metadata
  of every audio file behind the items; the memorization report embeds these files
  (SA2 §4.5 compares generations with the *training audio*, also for a latent dataset);
* an :class:`AudioSource` (:meth:`FileDataset.audio_source`): whole files at the model's sample rate,
  which ``musicdiff-encode`` turns into latent shards; datasets that hold no audio refuse with one line;
* the file's metadata fields in every item (:func:`item_fields`): a conditioner reads the field of its
  name (``bpm``, ``key`` ...) from the batch metadata, so a new conditioning field needs no dataset code;
* the Trainer's loader and epoch hooks (:meth:`FileDataset.make_loader`,
  :meth:`FileDataset.set_epoch`): a map-style DataLoader over the resumable sampler by default;
  streaming datasets (WebDataset shards) build their own from the sampler's position.

The Trainer calls :func:`training_loader` and :func:`begin_epoch`, which also accept a plain torch
map-style dataset (tests, notebooks), so no caller looks for attributes or concrete classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


@dataclass(frozen=True)
class SourceFile:
    """One audio file behind a dataset's items.

    Attributes:
        name: path relative to the dataset's audio root, POSIX separators (the manifest key and the
            item's name in latent indexes and memorization reports).
        path: path of the audio file, under the dataset's root (for a latent dataset it may be gone).
        metadata: the file's metadata fields (caption, tags, bpm ...), as the prompts read them.
    """

    name: str
    path: Path
    metadata: Mapping[str, Any] = field(default_factory=dict)


ITEM_KEYS = ("audio", "latents", "padding_mask", "prompt", "seconds_start", "seconds_total", "path")


def item_fields(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata fields a dataset item carries besides its own keys (:data:`ITEM_KEYS`).

    As stable-audio-tools' datasets merge their metadata into each item's info dict, every field of a
    file's manifest entry or sidecar (``caption``, ``bpm``, ``genre`` ...) reaches the collated
    ``batch["metadata"]``, where :class:`~musicdiff.models.conditioners.ConditionerSet` reads the field
    named after each conditioner. The item's own keys (crop, timing, built prompt, path) win over
    metadata fields of the same name; keys starting with ``_`` stay private.
    """
    return {k: v for k, v in metadata.items() if k not in ITEM_KEYS and not str(k).startswith("_")}


@runtime_checkable
class AudioSource(Protocol):
    """Whole audio files at a fixed rate and channel count: what ``musicdiff-encode`` reads.

    ``AudioFolderDataset`` is one; ``WebDatasetShards(kind=audio)`` hands out a ``ShardFiles``.
    A file that cannot be read raises :class:`~musicdiff.data.audio_io.AudioLoadError` from
    ``load_full`` (logged and counted as skipped by the encoder).
    """

    root: Path  # recorded in the latent index: latent datasets find the source audio under it
    sample_rate: int
    channels: int
    skipped: Mapping[str, int]  # files rejected before encoding, by reason

    def __len__(self) -> int: ...

    def relpath(self, idx: int) -> str:
        """Name of file ``idx`` relative to ``root`` (the key recorded as done in the latent index)."""
        ...

    def metadata(self, idx: int) -> dict[str, Any]:
        """Metadata fields of file ``idx`` (stored with its latents)."""
        ...

    def load_full(self, idx: int) -> torch.Tensor:
        """The whole file ``[channels, T]`` at ``sample_rate``, scaled by :meth:`gain`."""
        ...

    def gain(self, idx: int) -> float:
        """Full-scale gain applied to file ``idx`` (1.0 unless it peaks above full scale)."""
        ...


class FileDataset(ABC):
    """Base of the training datasets: items from audio files, plus the hooks above.

    A subclass also derives from ``torch.utils.data.Dataset`` (or ``IterableDataset``), sets
    ``sample_rate``, ``channels``, ``skipped`` (a ``Counter`` of rejected files by reason) and
    ``prompt_builder`` (a :class:`~musicdiff.data.prompts.PromptBuilder`), and implements
    ``__len__``, ``__getitem__`` (or ``__iter__``) and :meth:`source_files`.
    """

    sample_rate: int
    channels: int
    skipped: Mapping[str, int]
    prompt_builder: Any

    @abstractmethod
    def __len__(self) -> int:
        """Items per epoch."""

    @abstractmethod
    def source_files(self) -> list[SourceFile]:
        """The audio files behind the items, in item order (one per file).

        Raises:
            TypeError: the dataset's audio is not stored as files (say where it is instead).
        """

    def audio_source(self) -> AudioSource:
        """The whole files for ``musicdiff-encode``; a dataset without audio raises TypeError."""
        raise TypeError(f"musicdiff-encode encodes audio: dataset {type(self).__name__} holds no audio files")

    def set_epoch(self, epoch: int) -> None:  # noqa: B027 - optional hook, no-op by default
        """Called by the Trainer before each epoch's loader (crops and shuffles may follow it)."""

    def make_loader(self, sampler: Sampler, batch_size: int, num_workers: int, collate_fn: Callable,
                    pin_memory: bool = False) -> DataLoader:
        """The Trainer's DataLoader for the position of ``sampler`` (a ``ResumableShardedSampler``).

        Map-style by default: ``sampler`` picks this rank's indices and resumes mid-epoch.
        """
        return default_loader(self, sampler, batch_size, num_workers, collate_fn, pin_memory)


def default_loader(dataset: Dataset, sampler: Sampler, batch_size: int, num_workers: int, collate_fn: Callable,
                   pin_memory: bool = False) -> DataLoader:
    """A map-style DataLoader over ``sampler`` with full batches only (every rank steps alike)."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate_fn, drop_last=True, persistent_workers=False, pin_memory=pin_memory)


def training_loader(dataset: Dataset, sampler: Sampler, batch_size: int, num_workers: int, collate_fn: Callable,
                    pin_memory: bool = False) -> DataLoader:
    """The Trainer's loader: :meth:`FileDataset.make_loader`, or :func:`default_loader` for a plain dataset."""
    if isinstance(dataset, FileDataset):
        return dataset.make_loader(sampler, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_fn,
                                   pin_memory=pin_memory)
    return default_loader(dataset, sampler, batch_size, num_workers, collate_fn, pin_memory)


def begin_epoch(dataset: Dataset, epoch: int) -> None:
    """Tell a :class:`FileDataset` that ``epoch`` starts (plain datasets have no epoch state)."""
    if isinstance(dataset, FileDataset):
        dataset.set_epoch(epoch)


def audio_source_of(data: Any) -> AudioSource:
    """The :class:`AudioSource` of a dataset (``musicdiff-encode``'s input).

    Args:
        data: a :class:`FileDataset` or an :class:`AudioSource`.

    Raises:
        TypeError: anything else, or a dataset without audio (one line naming it).
    """
    if isinstance(data, FileDataset):
        return data.audio_source()
    if isinstance(data, AudioSource):
        return data
    raise TypeError(f"musicdiff-encode reads a dataset of conf/dataset (a FileDataset) or an audio folder, "
                    f"not a {type(data).__name__}")


__all__ = ["ITEM_KEYS", "AudioSource", "FileDataset", "SourceFile", "audio_source_of", "begin_epoch",
           "default_loader", "item_fields", "training_loader"]
