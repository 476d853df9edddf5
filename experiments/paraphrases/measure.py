"""Does the tiny model follow paraphrased prompts it never saw? (docs/EVALUATION.md, sentence conditioner)

Recipe of ``tests/cli/test_pipeline_learns_pitch.py``: the tiny autoencoder (300 steps, reconstruction
losses) on square/saw single notes C4 E4 G4 B4 -> pre-encoded latents -> the tiny DiT (800 steps) with
the chosen text conditioner. Then ``--per-note`` one-second generations per note (dpmpp_2m, 25 steps,
CFG 4) for two prompt sets, and the fraction whose dominant pitch (strongest spectral peak between
200 and 600 Hz, every fundamental of the data and none of their harmonics) is the prompted note
(chance 25 %):

* training-style prompts: "saw playing E4 at 120 bpm panned center" (the captions' wording);
* unseen paraphrases: "a sawtooth lead holding E4", "buzzy saw synth, note E4", ...

    OMP_NUM_THREADS=2 python experiments/paraphrases/measure.py --conditioner minilm_timing
    python experiments/paraphrases/measure.py --conditioner lut_timing_tiny --autoencoder outputs/paraphrases/ae/export

The autoencoder and latents are trained once under ``--out`` and reused by later runs (the second
conditioner trains only its DiT). A full run takes tens of CPU minutes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from musicdiff.data.synthetic import NOTES, note_frequency
from musicdiff.sweeps.optuna_sweep import compose_config

ROOTS = ["C4", "E4", "G4", "B4"]
INSTRUMENTS = ["square", "saw"]
DATA = ["dataset.instruments=[square,saw]", f"dataset.notes=[{','.join(ROOTS)}]", "dataset.chord_prob=0.0",
        "dataset.num_items=32"]
PARAPHRASES = {  # wordings absent from the synthetic captions ("<instrument> playing <note> at ...")
    "saw": ["a sawtooth lead holding {note}", "buzzy saw synth, note {note}", "{note} on a bright sawtooth wave"],
    "square": ["a hollow square-wave tone on {note}", "chiptune square synth sustaining {note}",
               "{note} played by a square oscillator"],
}
CONDITIONER_OVERRIDES = {"minilm_timing": ["conditioner=minilm_timing", "conditioner.cond_dim=64",
                                           "conditioner.global_cond_dim=128"],
                         "minilm_tokens": ["conditioner=minilm_timing", "conditioner.cond_dim=64",
                                           "conditioner.global_cond_dim=128", "conditioner.conditioners.prompt.pooling=tokens"],
                         "lut_timing_tiny": []}  # experiment=tiny's own conditioner


def dominant_note(audio: np.ndarray, sample_rate: int) -> str:
    """Nearest natural note to the strongest spectral peak between 200 and 600 Hz."""
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    spec = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    freqs = np.fft.rfftfreq(len(mono), 1.0 / sample_rate)
    band = (freqs > 200) & (freqs < 600)
    peak = float(freqs[band][spec[band].argmax()])
    return min(NOTES, key=lambda n: abs(np.log(note_frequency(n) / peak)))


def prompt_sets(per_note: int) -> dict[str, list[tuple[str, int, str]]]:
    """``{set: [(prompt, seed, note), ...]}``: instruments alternate, paraphrase templates rotate."""
    sets: dict[str, list[tuple[str, int, str]]] = {"training-style": [], "paraphrases": []}
    for note in ROOTS:
        for i in range(per_note):
            inst = INSTRUMENTS[i % 2]
            sets["training-style"].append((f"{inst} playing {note} at 120 bpm panned center", i, note))
            template = PARAPHRASES[inst][(i // 2) % len(PARAPHRASES[inst])]
            sets["paraphrases"].append((template.format(note=note), i, note))
    return sets


def main() -> None:
    from musicdiff.cli.encode import encode
    from musicdiff.cli.generate import generate
    from musicdiff.cli.train import train

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conditioner", choices=sorted(CONDITIONER_OVERRIDES), default="minilm_timing")
    ap.add_argument("--out", type=Path, default=Path("outputs/paraphrases"))
    ap.add_argument("--autoencoder", type=Path, default=None, help="reuse this tiny autoencoder export")
    ap.add_argument("--ae-steps", type=int, default=300)
    ap.add_argument("--dit-steps", type=int, default=800)
    ap.add_argument("--per-note", type=int, default=5, help="generations per note and prompt set")
    args = ap.parse_args()
    out = args.out.resolve()
    common = ["trainer.progress=false", "logger=none", f"paths.log_dir={out / 'outputs'}"]
    ae = args.autoencoder.resolve() if args.autoencoder else out / "ae" / "export"
    if not (ae / "autoencoder.safetensors").is_file():
        train(compose_config("train", [
            "experiment=tiny_autoencoder", "task.discriminator=null", "task.ema_beta=null",
            "task.optimizer_generator.lr=2e-3", f"trainer.max_steps={args.ae_steps}", "trainer.batch_size=4",
            "task.lr_warmup_steps=0", "task.latent_limit=null", "task.divergence=null", "task.adversarial_ramp_steps=0",
            "dataset.window_seconds=0.5", "trainer.checkpoint_every=100000", f"paths.output_dir={ae.parent}",
            *DATA, *common]))
    latents = ae.parent.parent / "latents" / "latents"
    if not latents.is_dir():
        encode(compose_config("encode", [f"autoencoder_from={ae}", *DATA, "logger=none",
                                         f"paths.output_dir={latents.parent}", f"paths.log_dir={out / 'outputs'}"]))
    dit = out / f"dit_{args.conditioner}"
    train(compose_config("train", [
        "experiment=tiny", "dataset=latents", f"dataset.root={latents}", "dataset.window_seconds=1.0",
        f"autoencoder_from={ae}", f"trainer.max_steps={args.dit_steps}", "trainer.checkpoint_every=100000",
        f"paths.output_dir={dit}", *CONDITIONER_OVERRIDES[args.conditioner], *common]))
    results = {}
    for name, rows in prompt_sets(args.per_note).items():
        folder = dit / "eval" / name.replace(" ", "_")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "prompts.csv").write_text("prompt,duration,seed\n" + "".join(
            f"\"{p}\",1.0,{s}\n" for p, s, _ in rows))
        paths = generate(compose_config("generate", [
            f"checkpoint={dit / 'export'}", f"prompts_file={folder / 'prompts.csv'}", "sampler=dpmpp_2m",
            "sampler.steps=25", "sampler.cfg_scale=4", f"paths.output_dir={folder}",
            f"paths.log_dir={out / 'outputs'}", "logger=none"]))
        got = [dominant_note(*sf.read(p)) for p in paths]
        results[name] = {"accuracy": float(np.mean([g == want for g, (_, _, want) in zip(got, rows)])),
                         "rows": [{"prompt": p, "note": want, "detected": g} for g, (p, _, want) in zip(got, rows)]}
        print(f"{args.conditioner} {name}: {results[name]['accuracy']:.0%} of {len(rows)} at the prompted pitch")
    (dit / "paraphrase_accuracy.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
