"""A deterministic synthetic music dataset: stereo tones, chords and drum beats with captions.

Small enough to learn on a CPU in minutes, structured enough to check what a model learnt: each
item repeats one note or triad (band-limited sine/square/saw/pluck) or a drum pattern at a tempo,
panned left/center/right, and its caption names instrument, pitch, tempo and pan, e.g.
``"saw playing a D4 minor chord at 120 bpm panned left"``. The manifest stores the structured
fields (``instrument``, ``kind``, ``pitch``, ``frequency`` in Hz, ``chord``, ``bpm``, ``pan``,
``seconds``) so tests can compare a generation's dominant pitch with its prompt.

Files are a pure function of (seed, item index, sample rate, channels, length): generating twice
gives byte-identical WAVs and manifest.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import soundfile as sf

from musicdiff.data.audio_dataset import AudioFolderDataset
from musicdiff.data.audio_io import convert_channels
from musicdiff.data.prompts import PromptBuilder

log = logging.getLogger("musicdiff.data")

VERSION = 1  # bump when the generator's output changes (invalidates caches)
NOTES = ("C4", "D4", "E4", "F4", "G4", "A4", "B4")
INSTRUMENTS = ("sine", "square", "saw", "pluck", "drums")
TEMPOS = (90, 120, 150)
PANS = {"left": -0.7, "center": 0.0, "right": 0.7}
CHORDS = {"major": (0, 4, 7), "minor": (0, 3, 7)}
CHORD_PROB = 0.3  # default share of pitched items that are triads
PROMPT_FIELDS = ("instrument", "pitch", "chord", "bpm", "pan")
_SEMITONES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def note_frequency(name: str, transpose: int = 0) -> float:
    """Equal-tempered frequency (A4 = 440 Hz) of a note name like ``"C4"``, plus semitones."""
    if len(name) != 2 or name[0] not in _SEMITONES or not name[1].isdigit():
        raise ValueError(f"note name must look like 'C4' (naturals only), got {name!r}")
    midi = 12 * (int(name[1]) + 1) + _SEMITONES[name[0]] + transpose
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _harmonics(instrument: str, freq: float, sr: int) -> list[tuple[int, float]]:
    top = max(1, min(30, int((sr / 2 - 1) // freq)))  # band-limited: no aliasing
    if instrument == "sine":
        return [(1, 1.0)]
    if instrument == "square":
        return [(k, 1.0 / k) for k in range(1, top + 1, 2)]
    return [(k, 1.0 / k) for k in range(1, top + 1)]  # saw, pluck


def _note(instrument: str, freqs: Sequence[float], gains: Sequence[float], n: int, sr: int) -> np.ndarray:
    """One note/chord of ``n`` frames with an attack-decay envelope."""
    t = np.arange(n) / sr
    attack = np.minimum(1.0, t / 0.005)
    out = np.zeros(n)
    for f, g in zip(freqs, gains):
        for k, a in _harmonics(instrument, f, sr):
            decay = np.exp(-t * (4.0 + 3.0 * k)) if instrument == "pluck" else np.exp(-t / (0.4 * n / sr))
            out += g * a * np.sin(2 * np.pi * k * f * t) * decay
    return out * attack


def _drum(kind: str, n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    if kind == "kick":
        phase = 2 * np.pi * np.cumsum(50.0 + 100.0 * np.exp(-t / 0.03)) / sr
        return np.sin(phase) * np.exp(-t / 0.15)
    noise = rng.standard_normal(n)
    if kind == "snare":
        return 0.5 * noise * np.exp(-t / 0.08) + 0.4 * np.sin(2 * np.pi * 180.0 * t) * np.exp(-t / 0.05)
    return 0.25 * np.diff(noise, prepend=0.0) * np.exp(-t / 0.02)  # hi-hat: high-passed noise


def synthesize_item(index: int, sample_rate: int, seconds: float, seed: int,
                    min_seconds: float | None = None, channels: int = 2, instruments: Sequence[str] = INSTRUMENTS,
                    notes: Sequence[str] = NOTES, chord_prob: float = CHORD_PROB) -> tuple[np.ndarray, dict[str, Any]]:
    """Audio ``[T, channels]`` (float, peak 0.5) and manifest fields of item ``index``.

    ``instruments``, ``notes`` and ``chord_prob`` restrict the vocabulary (e.g. sine notes only for
    a pitch-learning test); the defaults give the full dataset.
    """
    rng = np.random.default_rng([seed, index])
    instrument = instruments[rng.integers(len(instruments))]
    bpm = int(TEMPOS[rng.integers(len(TEMPOS))])
    pan = list(PANS)[rng.integers(len(PANS))]
    pitch = notes[rng.integers(len(notes))]
    chord = list(CHORDS)[rng.integers(len(CHORDS))] if rng.random() < chord_prob else None
    length = seconds if min_seconds is None else round(float(rng.uniform(min_seconds, seconds)), 1)
    n, beat = int(round(length * sample_rate)), 60.0 / bpm
    mono = np.zeros(n)
    start = float(rng.uniform(0.0, beat / 2))
    if instrument == "drums":
        pitch, chord = None, None
        step, events = beat / 2, []
        for j in range(int((length - start) / step) + 1):
            events.append(("hat", j * step))
            if j % 2 == 0:
                events.append(("kick" if (j // 2) % 2 == 0 else "snare", j * step))
        hits = {k: _drum(k, int(0.3 * sample_rate), sample_rate, rng) for k in ("kick", "snare", "hat")}
        for kind, at in events:
            i0 = int(round((start + at) * sample_rate))
            seg = hits[kind][: max(0, n - i0)]
            mono[i0: i0 + len(seg)] += seg
    else:
        intervals = CHORDS[chord] if chord else (0,)
        freqs = [note_frequency(pitch, s) for s in intervals]
        gains = [1.0] + [0.5] * (len(freqs) - 1)  # root loudest: it is the dominant pitch
        note = _note(instrument, freqs, gains, int(0.9 * beat * sample_rate), sample_rate)
        at = start
        while at < length:
            i0 = int(round(at * sample_rate))
            seg = note[: max(0, n - i0)]
            mono[i0: i0 + len(seg)] += seg
            at += beat
    theta = (PANS[pan] + 1.0) * math.pi / 4  # constant-power pan
    stereo = np.stack([mono * math.cos(theta), mono * math.sin(theta)], axis=1)
    audio = convert_channels(stereo, channels)
    audio = (audio * (0.5 / max(float(np.abs(audio).max()), 1e-9))).astype(np.float32)  # peak 0.5
    if instrument == "drums":
        caption = f"drum beat at {bpm} bpm panned {pan}"
    elif chord:
        caption = f"{instrument} playing a {pitch} {chord} chord at {bpm} bpm panned {pan}"
    else:
        caption = f"{instrument} playing {pitch} at {bpm} bpm panned {pan}"
    fields = {"caption": caption, "instrument": instrument, "kind": "drums" if instrument == "drums" else
              ("chord" if chord else "note"), "pitch": pitch, "chord": chord, "bpm": bpm, "pan": pan,
              "frequency": round(note_frequency(pitch), 2) if pitch else None, "seconds": length}
    return audio, fields


def generate_synthetic_dataset(out_dir: str | Path, num_items: int, sample_rate: int, seconds: float,
                               seed: int = 0, channels: int = 2, min_seconds: float | None = None,
                               instruments: Sequence[str] = INSTRUMENTS, notes: Sequence[str] = NOTES,
                               chord_prob: float = CHORD_PROB) -> Path:
    """Write ``num_items`` WAVs (16-bit) under ``out_dir/audio`` and ``out_dir/metadata.json``.

    Args:
        out_dir: destination folder (created).
        num_items: number of files.
        sample_rate: sample rate of the files.
        seconds: length of each file (the maximum if ``min_seconds`` is given).
        seed: generation seed; identical arguments give byte-identical files.
        channels: channel count (stereo by default; mono sums the pan).
        min_seconds: if set, lengths are drawn uniformly in ``[min_seconds, seconds]`` (0.1 s steps).
        instruments: instruments to draw from (subset of :data:`INSTRUMENTS`).
        notes: root notes to draw from (natural note names such as ``"C4"``).
        chord_prob: probability that a pitched item is a triad rather than a single note.

    Returns:
        The manifest path.
    """
    if num_items <= 0 or sample_rate <= 0 or seconds <= 0 or channels <= 0:
        raise ValueError(f"num_items, sample_rate, seconds and channels must be positive, got {num_items}, "
                         f"{sample_rate}, {seconds}, {channels}")
    if min_seconds is not None and not 0 < min_seconds <= seconds:
        raise ValueError(f"min_seconds must be in (0, seconds], got {min_seconds}")
    unknown = sorted(set(instruments) - set(INSTRUMENTS))
    if not instruments or unknown:
        raise ValueError(f"instruments must be a non-empty subset of {INSTRUMENTS}, got {list(instruments)}")
    if not notes:
        raise ValueError("notes must not be empty")
    for note in notes:
        note_frequency(note)  # validates the name
    if not 0.0 <= chord_prob <= 1.0:
        raise ValueError(f"chord_prob must be in [0, 1], got {chord_prob}")
    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(num_items):
        audio, fields = synthesize_item(i, sample_rate, seconds, seed, min_seconds, channels, list(instruments),
                                        list(notes), chord_prob)
        rel = f"audio/item_{i:05d}.wav"
        sf.write(str(out / rel), audio, sample_rate, subtype="PCM_16")
        entries.append({"path": rel, **fields})
    manifest = out / "metadata.json"
    manifest.write_text(json.dumps(entries, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


class SyntheticDataset(AudioFolderDataset):
    """The synthetic dataset as a training dataset: generated into ``cache_dir`` once, then read
    like any :class:`AudioFolderDataset` (random windows, SA2 timing labels, prompts).

    Args:
        sample_rate: model sample rate (files are generated at it).
        channels: model channel count.
        window_seconds: crop length.
        num_items: number of generated files.
        seconds: file length (maximum if ``min_item_seconds`` is set).
        min_item_seconds: shortest file length, for varied ``seconds_total``; ``None`` = all equal.
        seed: generation and crop seed.
        cache_dir: where generated sets live (one subfolder per parameter set).
        random_crop: random window offsets.
        prompt_builder: prompt builder; ``None`` → captions always, from :data:`PROMPT_FIELDS`.
        window_multiple: round the window up to a multiple of this many frames.
        instruments: instruments to draw from (default: all of :data:`INSTRUMENTS`).
        notes: root notes to draw from (default: :data:`NOTES`).
        chord_prob: probability of a triad instead of a single note.
    """

    def __init__(self, sample_rate: int, channels: int, window_seconds: float, num_items: int = 64,
                 seconds: float = 2.0, min_item_seconds: float | None = None, seed: int = 0,
                 cache_dir: str | Path = "data/synthetic", random_crop: bool = True,
                 prompt_builder: PromptBuilder | None = None, window_multiple: int = 1,
                 instruments: Sequence[str] | None = None, notes: Sequence[str] | None = None,
                 chord_prob: float = CHORD_PROB) -> None:
        instruments = list(instruments) if instruments else list(INSTRUMENTS)
        notes = list(notes) if notes else list(NOTES)
        name = (f"synth_v{VERSION}_sr{sample_rate}_ch{channels}_n{num_items}_s{seconds}"
                f"_min{min_item_seconds}_seed{seed}")
        if instruments != list(INSTRUMENTS) or notes != list(NOTES) or chord_prob != CHORD_PROB:
            name += f"_{'-'.join(instruments)}_{'-'.join(notes)}_chord{chord_prob}"
        root = Path(cache_dir).expanduser() / name
        if not (root / "COMPLETE").is_file():
            tmp = root.with_name(f"{name}.tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            log.info("generating %d synthetic items into %s", num_items, root)
            generate_synthetic_dataset(tmp, num_items, sample_rate, seconds, seed, channels, min_item_seconds,
                                       instruments, notes, chord_prob)
            (tmp / "COMPLETE").write_text("ok\n")
            if root.exists() and not (root / "COMPLETE").is_file():
                shutil.rmtree(root, ignore_errors=True)  # left over from an interrupted older layout
            try:
                os.replace(tmp, root)  # atomic; another process may have won the race
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
                if not (root / "COMPLETE").is_file():
                    raise
        super().__init__(root=root, sample_rate=sample_rate, channels=channels, window_seconds=window_seconds,
                         manifest=root / "metadata.json", random_crop=random_crop, seed=seed,
                         prompt_builder=prompt_builder or PromptBuilder(fields=PROMPT_FIELDS, caption_prob=1.0),
                         window_multiple=window_multiple)
