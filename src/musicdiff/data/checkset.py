"""A real-music check set built offline: public-domain scores rendered with real instrument samples.

Every test and demo of the synthetic pipeline hears sine tones; researchers bring produced music
(dense spectra, drum transients, reverb tails, loud masters), on which the tiny VAE recipe used to
diverge (issue 14). This module builds a small real-music folder that any set-up can make without
the internet, from what the package registries offer:

* scores: the ``music21`` corpus (PyPI; Bach chorales, Mozart and Haydn quartets, Joplin ...),
  read with music21 and written as MIDI with ``pretty_midi``;
* sound: FluidSynth with the FluidR3 General MIDI soundfont (Debian ``fluidsynth`` and
  ``fluid-soundfont-gm``, MIT licence), i.e. sampled strings, brass, winds, organ, piano,
  choir, synthesisers and drum kits, with FluidSynth's reverb and chorus.

Each piece is arranged for an ensemble (strings, organ, brass, an "orchestral game score" with
timpani and cymbals, electronic remixes with a drum kit and synth bass), rendered at 44.1 kHz
stereo, cut to ``clip_seconds``, faded out and peak-normalised to -1 dBFS like a mastered track.
The folder holds ``<id>.flac`` files, ``metadata.jsonl`` with SA2-style fields (caption, genre,
instruments, bpm, key, composer, title, licence) and ``LICENSES.md``. It is written under a
temporary name and renamed when complete, and rebuilt only when the build settings change.

Usage::

    python -m musicdiff.data.checkset --out outputs/data/real_music     # or: make real-music
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

log = logging.getLogger("musicdiff.checkset")

DEFAULT_ROOT = Path("outputs/data/real_music")
SAMPLE_RATE = 44100
SOUNDFONT_CANDIDATES = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/soundfonts/FluidR3_GM.sf2",
                        "/usr/share/sounds/sf2/default-GM.sf2")
BUILD_VERSION = 1  # bump when the arrangement code changes (invalidates caches)
# General MIDI programs (0-based) and drum keys used by the arrangements.
GM = {"piano": 0, "organ": 19, "violin": 40, "viola": 41, "cello": 42, "contrabass": 43, "strings": 48,
      "timpani": 47, "choir": 52, "trumpet": 56, "trombone": 57, "tuba": 58, "horn": 60, "oboe": 68,
      "bassoon": 70, "clarinet": 71, "flute": 73, "square lead": 80, "saw lead": 81, "synth bass": 38,
      "warm pad": 89, "harpsichord": 6}
KICK, SNARE, CLAP, HAT, OPEN_HAT, CRASH = 36, 38, 39, 42, 46, 49


class CheckSetUnavailable(RuntimeError):
    """A tool the check set needs (music21, pretty_midi, fluidsynth, a GM soundfont) is missing."""


@dataclass(frozen=True)
class Piece:
    """One clip: a corpus score arranged for an ensemble.

    Args:
        id: file stem.
        score: music21 corpus path.
        programs: GM instrument name per score part (top to bottom); extra parts reuse the last one.
        genre: SA2-style genre tag.
        bpm: playback tempo (quarter notes per minute).
        drums: drum pattern (``none`` | ``rock`` | ``house`` | ``orchestral``).
        bass: GM instrument doubling the lowest part an octave down (electronic remixes), or None.
        transpose: semitones added to every note.
        moods: SA2-style mood tags.
    """

    id: str
    score: str
    programs: tuple[str, ...]
    genre: str
    bpm: float
    drums: str = "none"
    bass: str | None = None
    transpose: int = 0
    moods: tuple[str, ...] = ()


PIECES: tuple[Piece, ...] = (
    Piece("bach_bwv66_strings", "bach/bwv66.6", ("violin", "violin", "viola", "cello"), "baroque chorale", 76,
          moods=("solemn",)),
    Piece("bach_bwv4_organ", "bach/bwv4.8", ("organ",), "baroque church music", 70, moods=("sacred", "calm")),
    Piece("bach_bwv26_brass", "bach/bwv26.6", ("trumpet", "horn", "trombone", "tuba"), "brass chorale", 84,
          moods=("majestic",)),
    Piece("bach_bwv40_choir", "bach/bwv40.8", ("choir",), "choral", 66, moods=("sacred", "warm")),
    Piece("bach_bwv8_winds", "bach/bwv8.6", ("flute", "oboe", "clarinet", "bassoon"), "wind quartet", 80,
          moods=("pastoral",)),
    Piece("joplin_maple_leaf_piano", "joplin/maple_leaf_rag", ("piano",), "ragtime", 96, moods=("playful",)),
    Piece("mozart_k80_quartet", "mozart/k80/movement1", ("violin", "violin", "viola", "cello"), "classical",
          72, moods=("gentle",)),
    Piece("haydn_op74_quartet", "haydn/opus74no1/movement1", ("violin", "violin", "viola", "cello"),
          "classical", 126, moods=("lively",)),
    Piece("bach_bwv11_orchestral", "bach/bwv11.6", ("horn", "strings", "strings", "contrabass"),
          "orchestral game soundtrack", 90, drums="orchestral", bass="timpani", moods=("epic", "heroic")),
    Piece("bach_bwv10_electronic", "bach/bwv10.7", ("saw lead", "warm pad", "warm pad", "synth bass"),
          "electronic", 124, drums="house", bass="synth bass", transpose=-2, moods=("energetic",)),
    Piece("bach_bwv1_synthrock", "bach/bwv1.6", ("square lead", "square lead", "warm pad", "synth bass"),
          "chiptune game soundtrack", 140, drums="rock", bass="synth bass", moods=("upbeat",)),
    Piece("corelli_harpsichord", "corelli/opus3no1/1grave", ("violin", "violin", "harpsichord"),
          "baroque trio sonata", 60, moods=("stately",)),
)


@dataclass
class BuildConfig:
    """Settings that change the audio (their hash names the cache)."""

    clip_seconds: float = 20.0
    sample_rate: int = SAMPLE_RATE
    seed: int = 0
    pieces: tuple[str, ...] = field(default_factory=lambda: tuple(p.id for p in PIECES))

    def key(self) -> str:
        text = json.dumps({**asdict(self), "version": BUILD_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def find_tools(soundfont: str | None = None) -> tuple[str, str]:
    """Paths of the ``fluidsynth`` binary and a GM soundfont, or :class:`CheckSetUnavailable` naming what is missing."""
    exe = shutil.which("fluidsynth")
    sf2 = soundfont or os.environ.get("MUSICDIFF_SOUNDFONT") or next(
        (p for p in SOUNDFONT_CANDIDATES if Path(p).is_file()), None)
    missing = [name for name, ok in (("fluidsynth", exe), ("a GM soundfont (fluid-soundfont-gm)", sf2 and
                                                          Path(sf2).is_file())) if not ok]
    try:
        import music21  # noqa: F401
        import pretty_midi  # noqa: F401
    except ImportError as e:
        missing.append(f"python package {e.name}")
    if missing:
        raise CheckSetUnavailable(f"real-music check set needs {', '.join(missing)}: run `make real-music` "
                                  "(apt-get install fluidsynth fluid-soundfont-gm; pip install -e '.[dev]')")
    return exe, str(sf2)


def _score_notes(piece: Piece) -> tuple[list[list[tuple[float, float, int]]], str, str]:
    """Notes ``(start_quarter, length_quarter, midi_pitch)`` per part, the key (``"A major"``, after
    ``transpose``) and the composer."""
    from music21 import corpus

    score = corpus.parse(piece.score).stripTies()
    parts = []
    for part in score.parts:
        notes = []
        for el in part.flatten().notes:
            length = float(el.quarterLength)
            if length <= 0:  # grace notes
                continue
            for p in getattr(el, "pitches", ()):
                notes.append((float(el.offset), length, int(p.midi) + piece.transpose))
        if notes:
            parts.append(notes)
    key = score.analyze("key").transpose(piece.transpose)
    composer = score.metadata.composer if score.metadata and score.metadata.composer else piece.score.split("/")[0]
    return parts, f"{key.tonic.name.replace('-', 'b')} {key.mode}", composer.title() if composer.islower() else composer


def _drum_hits(pattern: str, beats: float) -> list[tuple[float, int, int]]:
    """``(beat, key, velocity)`` for a drum pattern over ``beats`` quarter notes (4/4 bars)."""
    hits: list[tuple[float, int, int]] = []
    for bar in range(int(beats // 4) + 1):
        b = 4.0 * bar
        if pattern == "house":
            hits += [(b + i, KICK, 110) for i in range(4)] + [(b + 1, CLAP, 95), (b + 3, CLAP, 95)]
            hits += [(b + i + 0.5, OPEN_HAT, 70) for i in range(4)]
        elif pattern == "rock":
            hits += [(b, KICK, 112), (b + 2.5, KICK, 100), (b + 2, KICK, 105), (b + 1, SNARE, 110), (b + 3, SNARE, 115)]
            hits += [(b + i / 2, HAT, 60 + 20 * (i % 2 == 0)) for i in range(8)]
        elif pattern == "orchestral":
            if bar % 2 == 0:
                hits.append((b, CRASH, 90))
        elif pattern != "none":
            raise ValueError(f"unknown drum pattern {pattern!r}")
    return [h for h in hits if h[0] < beats]


def arrange_midi(piece: Piece, seconds: float, rng: random.Random) -> tuple[object, str, str]:
    """A humanised ``pretty_midi.PrettyMIDI`` of the first ``seconds`` of ``piece``, its key and composer."""
    import pretty_midi

    parts, key, composer = _score_notes(piece)
    spq = 60.0 / piece.bpm  # seconds per quarter
    horizon = seconds / spq + 4  # quarters needed (plus a bar of tail)
    midi = pretty_midi.PrettyMIDI(initial_tempo=piece.bpm)
    by_program: dict[str, object] = {}
    for i, notes in enumerate(parts):
        name = piece.programs[min(i, len(piece.programs) - 1)]
        inst = by_program.get(name)
        if inst is None:
            inst = by_program[name] = pretty_midi.Instrument(program=GM[name], name=name)
            midi.instruments.append(inst)
        base_velocity = rng.randint(70, 95)
        for start, length, pitch in notes:
            if start >= horizon:
                continue
            t0 = max(0.0, start * spq + rng.gauss(0.0, 0.006))
            t1 = t0 + length * spq * 0.95
            vel = int(np.clip(base_velocity + rng.randint(-10, 10) + (8 if start % 4 == 0 else 0), 30, 127))
            inst.notes.append(pretty_midi.Note(vel, int(np.clip(pitch, 0, 127)), t0, t1))
    if piece.bass is not None and parts:
        bass = pretty_midi.Instrument(program=GM[piece.bass], name=f"{piece.bass} (octave down)")
        for start, length, pitch in parts[-1]:
            if start < horizon and (piece.bass != "timpani" or start % 2 == 0):
                t0 = start * spq
                bass.notes.append(pretty_midi.Note(rng.randint(85, 110), max(pitch - 12, 24), t0,
                                                   t0 + min(length, 2.0) * spq * 0.9))
        midi.instruments.append(bass)
    if piece.drums != "none":
        kit = pretty_midi.Instrument(program=0, is_drum=True, name="drum kit")
        for beat, key_number, vel in _drum_hits(piece.drums, horizon):
            t0 = beat * spq + rng.gauss(0.0, 0.004)
            kit.notes.append(pretty_midi.Note(int(np.clip(vel + rng.randint(-8, 8), 1, 127)), key_number,
                                              max(t0, 0.0), max(t0, 0.0) + 0.1))
        midi.instruments.append(kit)
    return midi, key, composer


def render(midi_path: Path, wav_path: Path, fluidsynth: str, soundfont: str, sample_rate: int) -> np.ndarray:
    """Render a MIDI file with FluidSynth (reverb and chorus on); returns float32 ``[T, 2]``."""
    cmd = [fluidsynth, "-ni", "-q", "-g", "0.6", "-r", str(sample_rate), "-F", str(wav_path), soundfont, str(midi_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0 or not wav_path.is_file():
        raise RuntimeError(f"fluidsynth failed on {midi_path.name} (exit {proc.returncode}): "
                           f"{' '.join((proc.stderr or proc.stdout).split())[:300]}")
    audio, sr = sf.read(str(wav_path), dtype="float32", always_2d=True)
    if sr != sample_rate:
        raise RuntimeError(f"fluidsynth wrote {sr} Hz instead of {sample_rate} Hz for {midi_path.name}")
    return audio


def master(audio: np.ndarray, seconds: float, sample_rate: int, peak_db: float = -1.0) -> np.ndarray:
    """Cut to ``seconds`` (zero-padded if shorter), 0.5 s fade-out, remove DC, peak-normalise to ``peak_db``."""
    n = int(round(seconds * sample_rate))
    out = np.zeros((n, audio.shape[1]), dtype=np.float32)
    out[: min(n, len(audio))] = audio[:n]
    out -= out.mean(axis=0, keepdims=True)
    fade = min(n, sample_rate // 2)
    out[n - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)[:, None]
    peak = float(np.abs(out).max())
    if peak > 0:
        out *= 10 ** (peak_db / 20) / peak
    return out


def describe(piece: Piece, key: str, composer: str) -> dict[str, object]:
    """SA2-style metadata of a rendered piece (caption plus prompt fields)."""
    instruments = sorted({p for p in piece.programs} | ({piece.bass} if piece.bass else set())
                         | ({"drum kit"} if piece.drums in ("house", "rock") else set())
                         | ({"cymbals"} if piece.drums == "orchestral" else set()))
    caption = (f"{piece.genre.capitalize()} in {key} at {int(piece.bpm)} BPM, arranged for "
               f"{', '.join(instruments)}; after a score by {composer}.")
    return {"caption": caption, "genre": piece.genre, "instruments": instruments, "bpm": piece.bpm,
            "key": key, "moods": list(piece.moods), "composer": composer, "title": piece.score,
            "license": "public-domain composition; music21 corpus encoding (research use); FluidR3_GM samples (MIT)"}


LICENSES = """# Licences of the real-music check set

Built locally by `musicdiff.data.checkset`; nothing here is downloaded at run time or committed.

* Compositions: J. S. Bach, W. A. Mozart, J. Haydn, S. Joplin, A. Corelli; all public domain.
* Score encodings: the music21 corpus (PyPI `music21`, BSD-3 software). Its corpus licence says each
  encoding is public domain or licensed for use, some with restrictions on commercial use (see
  `music21/corpus/license.txt` and the files' own notices): use this set for research and tests.
* Instrument samples: FluidR3_GM soundfont by Frank Wen (Debian `fluid-soundfont-gm`), MIT licence.
* Renderer: FluidSynth (Debian `fluidsynth`, LGPL-2.1), run as a program.
"""


def build_checkset(root: str | Path = DEFAULT_ROOT, clip_seconds: float = 20.0, pieces: tuple[str, ...] | None = None,
                   seed: int = 0, soundfont: str | None = None, force: bool = False) -> Path:
    """Build (or reuse) the check set in ``root``; returns ``root``.

    Args:
        root: output folder (cached: an existing build with the same settings is reused).
        clip_seconds: length of every clip.
        pieces: ids from :data:`PIECES` (None: all, about 4 minutes at 20 s).
        seed: humanisation seed.
        soundfont: GM soundfont path (default: Debian's FluidR3_GM).
        force: rebuild even if the cache matches.

    Raises:
        CheckSetUnavailable: fluidsynth, the soundfont, music21 or pretty_midi is missing.
    """
    root = Path(root)
    known = {p.id: p for p in PIECES}
    ids = tuple(pieces) if pieces else tuple(known)
    if unknown := [i for i in ids if i not in known]:
        raise ValueError(f"unknown check-set pieces {unknown}; known: {sorted(known)}")
    config = BuildConfig(clip_seconds=float(clip_seconds), seed=seed, pieces=ids)
    stamp = root / "BUILD.json"
    if not force and stamp.is_file() and json.loads(stamp.read_text()).get("key") == config.key():
        return root
    fluidsynth, sf2 = find_tools(soundfont)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        records = []
        for i, pid in enumerate(ids):
            piece = known[pid]
            midi, key, composer = arrange_midi(piece, config.clip_seconds, random.Random(f"{seed}/{pid}"))
            midi_path = staging / f"{pid}.mid"
            midi.write(str(midi_path))
            audio = render(midi_path, staging / f"{pid}.render.wav", fluidsynth, sf2, config.sample_rate)
            (staging / f"{pid}.render.wav").unlink()
            midi_path.unlink()
            sf.write(str(staging / f"{pid}.flac"), master(audio, config.clip_seconds, config.sample_rate),
                     config.sample_rate, subtype="PCM_16")
            records.append({"path": f"{pid}.flac", **describe(piece, key, composer)})
            log.info("check set %d/%d: %s (%s)", i + 1, len(ids), pid, key)
        with open(staging / "metadata.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
        (staging / "LICENSES.md").write_text(LICENSES, encoding="utf-8")
        (staging / "BUILD.json").write_text(json.dumps({"key": config.key(), **asdict(config)}, indent=1))
        staging.chmod(0o755)  # mkdtemp makes it private
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def main(argv: list[str] | None = None) -> None:
    """``python -m musicdiff.data.checkset [--out DIR] [--seconds S] [--pieces id ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_ROOT), help="output folder")
    parser.add_argument("--seconds", type=float, default=20.0, help="clip length in seconds")
    parser.add_argument("--pieces", nargs="*", default=None, help=f"subset of {[p.id for p in PIECES]}")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        out = build_checkset(args.out, args.seconds, tuple(args.pieces) if args.pieces else None, force=args.force)
    except CheckSetUnavailable as e:
        raise SystemExit(str(e)) from None
    print(out)


if __name__ == "__main__":
    main()
