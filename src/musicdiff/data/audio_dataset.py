"""A folder of audio files with sidecar metadata, cropped to training windows.

Each item is a random window of one file at the model's sample rate and channel count, as in
stable-audio-tools' ``SampleDataset`` + ``PadCrop_Normalized_T``: the crop is zero-padded to the
window with a padding mask, and labelled with the SA2 timing conditioning (Evans et al. 2024,
§3.1): ``seconds_start = floor(offset / sr)`` and ``seconds_total = ceil(file frames / sr)``
(integers, returned as floats). Prompts come from the metadata via :class:`PromptBuilder`.

Files are checked once at construction (header plus a quick decode: unreadable, empty,
non-finite, silent or too short files, and files whose ``<name>.json`` sidecar is broken
(``bad_metadata``), are skipped, logged and counted in ``self.skipped``);
a file that fails later, when read, is also counted and another item is returned instead. Only
a folder with no usable audio at all is an error.

Float (and lossy) files whose peak exceeds full scale are scaled by ``1 / peak`` of the whole file
(:func:`~musicdiff.data.audio_io.full_scale_gain`, the rule ``musicdiff-encode`` shares through
:meth:`AudioFolderDataset.load_full`); each is logged once and counted in ``self.normalised``.
Nothing is clamped (a resampled file may overshoot 1.0 by the resampler's ripple).
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from musicdiff.data.audio_io import (
    AUDIO_EXTENSIONS, AudioInfo, AudioLoadError, audio_info, display_path, file_peak, full_scale_gain, is_silent,
    load_audio, resampled_length,
)
from musicdiff.data.base import FileDataset, SourceFile, item_fields
from musicdiff.data.manifest import MetadataError, find_manifest, normalize_relpath, read_manifest, sidecar_metadata
from musicdiff.data.prompts import PromptBuilder

log = logging.getLogger("musicdiff.data")

_PROBE_SECONDS = 2.0  # length of each probe decoded by the construction-time check
_FULL_CHECK_SECONDS = 30.0  # files up to this long are decoded entirely by the check


def item_rng(seed: int, epoch: int, idx: int, occurrence: int) -> random.Random:
    """Per-item RNG: fixed by (seed, epoch, index, how often this process drew the index this epoch).

    Nothing here depends on the process or DataLoader-worker layout, so the crops and prompts of a
    global batch are the same for 1 or N processes and after a resume mid-epoch; the Trainer calls
    ``set_epoch`` so crops change between epochs. Repeated draws of one index (direct indexing, or
    a dataset smaller than the global batch) get fresh crops through ``occurrence``.
    """
    return random.Random(f"{seed}-{epoch}-{idx}-{occurrence}")


class EpochSeededItems:
    """Per-item RNGs keyed on (seed, epoch, index, occurrence), for datasets with a ``seed``."""

    seed: int

    def set_epoch(self, epoch: int) -> None:
        """Key the crops/prompts of the following draws on ``epoch`` (called by the Trainer)."""
        self.epoch = int(epoch)
        self._occurrences: Counter[int] = Counter()

    def _item_rng(self, idx: int) -> random.Random:
        """The RNG of this draw of item ``idx`` (see :func:`item_rng`)."""
        self._occurrences[idx] += 1
        return item_rng(self.seed, self.epoch, idx, self._occurrences[idx])


class AudioFolderDataset(EpochSeededItems, FileDataset, Dataset):
    """Random windows of the audio files under ``root`` (recursive).

    Args:
        root: folder of audio files.
        sample_rate: model sample rate (files are resampled to it).
        channels: model channel count (mono ↔ stereo ↔ multichannel conversion).
        window_seconds: crop length in seconds.
        manifest: metadata file (JSON/JSONL/CSV, see :mod:`musicdiff.data.manifest`), relative to
            ``root`` or absolute; ``None`` looks for ``metadata.json``/``.jsonl``/``.csv`` in ``root``.
        random_crop: random window offset (else the start of each file).
        extensions: audio file suffixes to include.
        prompt_builder: builds prompts from metadata; ``None`` → SA2 defaults.
        seed: seed of crops and prompts.
        window_multiple: round the window up to a multiple of this many frames (e.g. the
            autoencoder's downsampling ratio).
        multichannel: ``first`` or ``downmix`` for files with more channels than ``channels``.
        min_seconds: files shorter than this are skipped (``too_short``).
        skip_silent: skip silent files (and silent crops at read time).
        silence_threshold_db: peak level below which audio counts as silent.
        validate: decode files at construction (else only headers are read).
        max_retries: other items tried when a file fails at read time.
    """

    def __init__(
        self,
        root: str | Path,
        sample_rate: int,
        channels: int,
        window_seconds: float,
        manifest: str | Path | None = None,
        random_crop: bool = True,
        extensions: Sequence[str] = AUDIO_EXTENSIONS,
        prompt_builder: PromptBuilder | None = None,
        seed: int = 0,
        window_multiple: int = 1,
        multichannel: str = "first",
        min_seconds: float = 0.0,
        skip_silent: bool = True,
        silence_threshold_db: float = -60.0,
        validate: bool = True,
        max_retries: int = 20,
    ) -> None:
        super().__init__()
        if sample_rate <= 0 or channels <= 0:
            raise ValueError(f"sample_rate and channels must be positive, got {sample_rate}, {channels}")
        if window_seconds <= 0 or window_multiple <= 0:
            raise ValueError(f"window_seconds and window_multiple must be positive, got {window_seconds}, "
                             f"{window_multiple}")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"audio folder not found: {self.root} (set dataset.root or the "
                                    f"MUSICDIFF_AUDIO_DIR environment variable)")
        self.sample_rate, self.channels = int(sample_rate), int(channels)
        self.window_seconds = float(window_seconds)
        self.window_frames = -(-round(window_seconds * sample_rate) // window_multiple) * window_multiple
        self.random_crop, self.seed = bool(random_crop), int(seed)
        self.multichannel = multichannel
        self.min_seconds, self.skip_silent = float(min_seconds), bool(skip_silent)
        self.silence_threshold_db, self.max_retries = float(silence_threshold_db), int(max_retries)
        self.prompt_builder = prompt_builder if prompt_builder is not None else PromptBuilder()
        self.skipped: Counter[str] = Counter()
        self.gains: dict[int, float] = {}  # file index -> full-scale gain, for the files checked so far
        self.set_epoch(0)

        manifest_path = self._manifest_path(manifest)
        self.manifest: dict[str, dict[str, Any]] = read_manifest(manifest_path) if manifest_path else {}
        exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
        candidates = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        present = {normalize_relpath(p.relative_to(self.root)) for p in candidates}
        missing = [k for k in self.manifest if k not in present]
        if missing:
            self.skipped["missing"] += len(missing)
            log.warning("%d manifest entries have no audio file under %s (e.g. %s)", len(missing), self.root,
                        missing[0])

        self.files: list[Path] = []
        self.infos: list[AudioInfo] = []
        self._metadata: list[dict[str, Any]] = []
        for path in candidates:
            try:
                info, peak = self._check(path, validate)
                entry = self.manifest.get(normalize_relpath(path.relative_to(self.root)))
                metadata = dict(entry) if entry is not None else sidecar_metadata(path)
            except (AudioLoadError, MetadataError) as e:
                reason = e.reason if isinstance(e, AudioLoadError) else "bad_metadata"
                self.skipped[reason] += 1
                log.warning("skipping %s", e)
                continue
            self.files.append(path)
            self.infos.append(info)
            self._metadata.append(metadata)
            if peak is not None:
                self._set_gain(len(self.files) - 1, peak)
        if self.skipped:
            log.warning("%s: %d usable files, skipped %s", self.root, len(self.files), dict(self.skipped))
        if self.normalised:
            log.warning("%s: %d files above full scale are scaled by 1/peak", self.root, self.normalised)
        if not self.files:
            raise ValueError(f"no usable audio in {self.root}: {len(candidates)} candidate files with extensions "
                             f"{sorted(exts)}, skipped {dict(self.skipped) or 'none'}")

    # ------------------------------------------------------------------ construction helpers
    def _manifest_path(self, manifest: str | Path | None) -> Path | None:
        if manifest is None:
            return find_manifest(self.root)
        path = Path(manifest).expanduser()
        if not path.is_absolute() and not path.is_file():
            path = self.root / path
        if not path.is_file():
            raise FileNotFoundError(f"manifest not found: {manifest} (looked in the cwd and {self.root})")
        return path

    def _check(self, path: Path, validate: bool) -> tuple[AudioInfo, float | None]:
        """Header (and, if ``validate``, decode) check; returns the info and the file's peak if known."""
        info = audio_info(path)
        if info.duration < self.min_seconds:
            raise AudioLoadError(path, "too_short", f"{info.duration:.2f} s < {self.min_seconds} s")
        if not validate:
            return info, None
        # Decode the whole file if short, else three probes (start, middle, end), at the file's rate.
        probe = int(_PROBE_SECONDS * info.sample_rate)
        if info.duration <= _FULL_CHECK_SECONDS:
            spans = [(0, info.frames)]
        else:
            spans = [(0, probe), ((info.frames - probe) // 2, (info.frames + probe) // 2),
                     (info.frames - probe, info.frames)]
        silent, peak = True, 0.0
        for start, stop in spans:
            audio = load_audio(path, info.sample_rate, info.channels, start, stop - start, info=info)
            silent = silent and is_silent(audio, self.silence_threshold_db)
            peak = max(peak, float(audio.abs().max())) if audio.numel() else peak
        if self.skip_silent and silent:
            raise AudioLoadError(path, "silent", f"peak below {self.silence_threshold_db} dBFS")
        if not info.may_exceed_full_scale:
            return info, 0.0  # integer PCM decodes into [-1, 1)
        return info, peak if len(spans) == 1 else file_peak(path, info)

    def _set_gain(self, idx: int, peak: float) -> float:
        gain = self.gains[idx] = full_scale_gain(peak)
        if gain < 1.0:
            log.warning("%s peaks at %.3g (%+.1f dBFS), above full scale: scaled by 1/peak",
                        display_path(self.files[idx]), peak, 20 * math.log10(peak))
        return gain

    def gain(self, idx: int) -> float:
        """The full-scale gain of file ``idx`` (see the module doc); computed on first use if not checked yet."""
        if idx in self.gains:
            return self.gains[idx]
        info = self.infos[idx]
        return self._set_gain(idx, file_peak(self.files[idx], info) if info.may_exceed_full_scale else 0.0)

    @property
    def normalised(self) -> int:
        """Number of files checked so far that were scaled down to full scale."""
        return sum(g < 1.0 for g in self.gains.values())

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.files)

    def relpath(self, idx: int) -> str:
        """Path of file ``idx`` relative to ``root`` (the manifest key)."""
        return normalize_relpath(self.files[idx].relative_to(self.root))

    def metadata(self, idx: int) -> dict[str, Any]:
        """Metadata fields of file ``idx`` (manifest entry, else a ``<stem>.json`` sidecar), read at construction."""
        return dict(self._metadata[idx])

    def source_files(self) -> list[SourceFile]:
        """Every usable file: its name relative to ``root``, its path and its metadata (data/base.py)."""
        return [SourceFile(self.relpath(i), self.files[i], self.metadata(i)) for i in range(len(self))]

    def audio_source(self) -> AudioFolderDataset:
        """The dataset itself: :meth:`load_full` reads whole files at the model's rate (``musicdiff-encode``)."""
        return self

    def num_frames(self, idx: int) -> int:
        """Length of file ``idx`` in frames at the model's sample rate."""
        info = self.infos[idx]
        return resampled_length(info.frames, info.sample_rate, self.sample_rate)

    def load_full(self, idx: int) -> torch.Tensor:
        """The whole file ``idx`` as ``[channels, T]`` at the model's rate, full-scale rule applied.

        Raises:
            AudioLoadError: the file cannot be read (any more).
        """
        audio = load_audio(self.files[idx], self.sample_rate, self.channels, multichannel=self.multichannel,
                           info=self.infos[idx])
        gain = self.gain(idx)
        return audio if gain == 1.0 else audio * gain

    def timing(self, offset: int, total_frames: int) -> tuple[float, float]:
        """SA2 timing labels ``(seconds_start, seconds_total)`` of a crop at ``offset`` frames."""
        return float(math.floor(offset / self.sample_rate)), float(math.ceil(total_frames / self.sample_rate))

    def _load_item(self, idx: int, rng: random.Random) -> dict[str, Any]:
        total = self.num_frames(idx)
        upper = max(0, total - self.window_frames)
        offset = rng.randint(0, upper) if self.random_crop and upper > 0 else 0
        crop = load_audio(self.files[idx], self.sample_rate, self.channels, offset, self.window_frames,
                          multichannel=self.multichannel, info=self.infos[idx])
        if self.skip_silent and is_silent(crop, self.silence_threshold_db):
            raise AudioLoadError(self.files[idx], "silent_crop", f"offset {offset}")
        n = crop.shape[1]
        audio = torch.zeros(self.channels, self.window_frames)
        audio[:, :n] = crop * self.gain(idx)
        mask = torch.zeros(self.window_frames, dtype=torch.bool)
        mask[:n] = True
        seconds_start, seconds_total = self.timing(offset, total)
        metadata = self.metadata(idx)
        return {**item_fields(metadata), "audio": audio, "padding_mask": mask,
                "prompt": self.prompt_builder(metadata, rng), "seconds_start": seconds_start,
                "seconds_total": seconds_total, "path": str(self.files[idx])}

    def __getitem__(self, idx: int) -> dict[str, Any]:
        """A window of file ``idx``: ``audio [C, T]``, ``padding_mask [T]``, prompt, timing, path."""
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} files")
        rng = self._item_rng(idx)
        for _ in range(self.max_retries + 1):
            try:
                return self._load_item(idx, rng)
            except AudioLoadError as e:
                self.skipped[e.reason] += 1
                log.warning("skipping at read time: %s", e)
                idx = rng.randrange(len(self))
        raise RuntimeError(f"{self.max_retries + 1} files in a row failed to load from {self.root}; "
                           f"skipped so far: {dict(self.skipped)}")
