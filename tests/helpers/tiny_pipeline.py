"""The tiny trained pipeline shared by learning tests: train the tiny autoencoder, pre-encode, train the
tiny DiT on one vocabulary (square/saw notes on C4 E4 G4 B4), as in ``experiments/demo/run.sh``.

:func:`tiny_pipeline` trains once per ``root`` (a ``COMPLETE`` marker makes later calls free), so the
pitch test (``tests/cli/test_pipeline_learns_pitch.py``) and the adapter learning test
(``tests/adapters/test_lora_learns.py``) can share one base model through a session directory.
:func:`prompted_pitch_accuracy` generates prompts naming a note and measures how often the dominant
pitch of the generated audio is the prompted one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from musicdiff.data.synthetic import NOTES, note_frequency

ROOTS = ["C4", "E4", "G4", "B4"]
INSTRUMENTS = ["square", "saw"]


def data_overrides(notes: list[str], num_items: int = 32) -> list[str]:
    """Synthetic-dataset overrides: square/saw single notes on ``notes``."""
    return [f"dataset.instruments=[{','.join(INSTRUMENTS)}]", f"dataset.notes=[{','.join(notes)}]",
            "dataset.chord_prob=0.0", f"dataset.num_items={num_items}"]


def dominant_note(audio: np.ndarray, sample_rate: int) -> tuple[str, float]:
    """Nearest natural note (C4–B4) to the strongest spectral peak between 200 and 600 Hz.

    The band holds every fundamental of the data (262–494 Hz) and none of their harmonics.
    """
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    spec = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    freqs = np.fft.rfftfreq(len(mono), 1.0 / sample_rate)
    band = (freqs > 200) & (freqs < 600)
    peak = float(freqs[band][spec[band].argmax()])
    return min(NOTES, key=lambda n: abs(np.log(note_frequency(n) / peak))), peak


def tiny_pipeline(root: Path, ae_steps: int = 300, dit_steps: int = 800) -> dict[str, Path]:
    """Train the tiny autoencoder and the tiny DiT on :data:`ROOTS` under ``root`` (once).

    Returns:
        ``{"autoencoder": <ae export>, "latents": <latent shards>, "dit": <dit export>, "log_dir": ...}``.
    """
    from musicdiff.cli.train import train
    from tests.conftest import compose_root

    root = Path(root)
    out = {"autoencoder": root / "ae" / "export", "latents": root / "latents" / "latents",
           "dit": root / "dit" / "export", "log_dir": root / "outputs"}
    if (root / "COMPLETE").is_file():
        return out
    data = data_overrides(ROOTS)
    common = [f"paths.log_dir={out['log_dir']}", "trainer.progress=false", "logger=none"]
    if not (out["autoencoder"] / "autoencoder.safetensors").is_file():
        train(compose_root("train", [
            "experiment=tiny_autoencoder", "task.discriminator=null", "task.ema_beta=null",
            "task.optimizer_generator.lr=2e-3", f"trainer.max_steps={ae_steps}", "trainer.batch_size=4",
            # synthetic tones: the pre-guard recipe (no warm-up, no latent guard, no rollback) the pitch numbers
            # were measured with; real music needs experiment=tiny_autoencoder's guards (experiments/real_music)
            "task.lr_warmup_steps=0", "task.latent_limit=null", "task.divergence=null", "task.adversarial_ramp_steps=0",
            "dataset.window_seconds=0.5", "trainer.checkpoint_every=100000", f"paths.output_dir={root / 'ae'}",
            *data, *common]))
    if not out["latents"].is_dir():
        encode_latents(out["autoencoder"], ROOTS, root / "latents", out["log_dir"])
    metrics = train(compose_root("train", [
        "experiment=tiny", "dataset=latents", f"dataset.root={out['latents']}",
        "dataset.window_seconds=1.0", f"autoencoder_from={out['autoencoder']}", f"trainer.max_steps={dit_steps}",
        "trainer.checkpoint_every=100000", f"paths.output_dir={root / 'dit'}", *common]))
    assert metrics["skipped_nonfinite"] == 0
    (root / "COMPLETE").write_text(json.dumps({k: float(v) for k, v in metrics.items()}))
    return out


def encode_latents(autoencoder: Path, notes: list[str], out_dir: Path, log_dir: Path, num_items: int = 32) -> Path:
    """Pre-encode the synthetic square/saw set on ``notes``; returns the shard directory."""
    from musicdiff.cli.encode import encode
    from tests.conftest import compose_root

    encode(compose_root("encode", [f"autoencoder_from={autoencoder}", *data_overrides(notes, num_items),
                                   "logger=none", f"paths.output_dir={out_dir}", f"paths.log_dir={log_dir}"]))
    return Path(out_dir) / "latents"


def rename_notes(latents: Path, out_dir: Path, names: dict[str, str]) -> Path:
    """Copy the latent shards of ``latents`` to ``out_dir``, naming each note by ``names`` (e.g. ``G4`` →
    ``sol``) in the stored caption and ``pitch`` field: the same audio, prompts in words the base never saw.

    Returns:
        ``out_dir`` (a shard directory for ``dataset=latents``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for src in Path(latents).iterdir():
        if src.suffix != ".jsonl":
            shutil.copy2(src, out_dir / src.name)
            continue
        lines = []
        for line in src.read_text().splitlines():
            rec = json.loads(line)
            meta = rec["metadata"]
            word = names[meta["pitch"]]
            meta["caption"] = meta["caption"].replace(f" {meta['pitch']} ", f" {word} ")
            meta["pitch"] = word
            lines.append(json.dumps(rec) + "\n")
        (out_dir / src.name).write_text("".join(lines))
    return out_dir


def prompted_pitch_accuracy(checkpoint: Path, notes: list[str], out_dir: Path, log_dir: Path,
                            extra: list[str] = (), per_note: int = 5,
                            names: dict[str, str] | None = None) -> tuple[float, list]:
    """Generate ``per_note`` one-second clips per note from ``checkpoint``; fraction whose dominant
    pitch is the prompted note, and the ``(wanted, detected, peak_hz)`` rows. ``names`` words the
    prompts (``{"G4": "sol"}`` → "square playing sol ..."); default: the note names."""
    from musicdiff.cli.generate import generate
    from tests.conftest import compose_root

    names = names or {}
    rows = [(f"{inst} playing {names.get(note, note)} at 120 bpm panned center", seed, note)
            for note in notes for seed, inst in enumerate((INSTRUMENTS * per_note)[:per_note])]
    prompts = Path(out_dir) / "prompts.csv"
    prompts.parent.mkdir(parents=True, exist_ok=True)
    prompts.write_text("prompt,duration,seed\n" + "".join(f"{p},1.0,{s}\n" for p, s, _ in rows))
    paths = generate(compose_root("generate", [
        f"checkpoint={checkpoint}", f"prompts_file={prompts}", "sampler=dpmpp_2m", "sampler.steps=25",
        "sampler.cfg_scale=4", f"paths.output_dir={out_dir}", f"paths.log_dir={log_dir}", "logger=none", *extra]))
    assert len(paths) == len(rows)
    detected = []
    for path, (_, _, want) in zip(paths, rows):
        audio, sr = sf.read(path)
        assert np.isfinite(audio).all()
        detected.append((want, *dominant_note(audio, sr)))
    return float(np.mean([want == got for want, got, _ in detected])), detected
