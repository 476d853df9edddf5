"""Time to quality of the tiny pipeline: compute per second of audio against prompted-pitch accuracy and FD.

For {v, RF, ARC} × sampler steps, every model generates one-second clips from prompts naming a
note (square/saw on C4 E4 G4 B4, the tiny pipeline's vocabulary; ``tests/helpers/tiny_pipeline.py``)
and the table reports:

* ``s/s``: seconds of compute (sampling + decode, wall clock, this process) per second of audio;
* ``acc``: fraction of clips whose dominant pitch is the prompted note;
* ``FD``: diagonal Fréchet distance of log-mel statistics (``MelStatsEmbedder``) against the
  training audio (the training latents decoded by the same autoencoder).

v and RF sample with DPM-Solver++(2M) and CFG 4 (the RF model through its k-diffusion wrapper);
the ARC model (post-trained from the v model, ``experiment=tiny_arc``) with ping-pong sampling and
no CFG. The goal (issue 15): ARC at 8 steps matching the 100-step quality at >= 10x less compute.
The models are trained under ``--work`` unless they are there already (``COMPLETE`` markers)::

    python experiments/bench/time_to_quality.py --work runs/ttq                  # trains, then measures
    python experiments/bench/time_to_quality.py --work runs/ttq --autoencoder <ae export> --dit-steps 400

Writes ``time_to_quality.md`` (the table) and ``time_to_quality.png`` (accuracy and FD against
compute) into ``--work``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # tests.helpers: the tiny pipeline's data vocabulary and pitch detector

from tests.conftest import compose_root  # noqa: E402
from tests.helpers.tiny_pipeline import INSTRUMENTS, ROOTS, dominant_note, encode_latents, tiny_pipeline  # noqa: E402

CONF = REPO / "conf" / "sampler"


def _train(overrides: list[str], out: Path) -> Path:
    from musicdiff.cli.train import train

    if not (out / "export" / "COMPLETE").is_file():
        train(compose_root("train", [*overrides, f"paths.output_dir={out}", "trainer.progress=false", "logger=none",
                                     "task.demo_prompts=[]", "trainer.checkpoint_every=100000",
                                     f"paths.log_dir={out.parent / 'outputs'}"]))
    return out / "export"


def models(args: argparse.Namespace) -> dict[str, Path]:
    """Export directories of the v, RF and ARC models (trained under ``args.work`` when missing)."""
    work = Path(args.work)
    if args.autoencoder:
        ae, latents = Path(args.autoencoder), work / "latents" / "latents"
        if not latents.is_dir():
            encode_latents(ae, ROOTS, work / "latents", work / "outputs")
    else:
        paths = tiny_pipeline(work / "pipeline")
        ae, latents = paths["autoencoder"], paths["latents"]
    data = ["dataset=latents", f"dataset.root={latents}", "dataset.window_seconds=1.0", f"autoencoder_from={ae}"]
    out = {"v": _train(["experiment=tiny", *data, f"trainer.max_steps={args.dit_steps}"], work / "v")}
    if "rf" in args.models:
        out["rf"] = _train(["experiment=tiny", "diffusion=rectified_flow", *data,
                            f"trainer.max_steps={args.dit_steps}"], work / "rf")
    if "arc" in args.models:
        out["arc"] = _train(["experiment=tiny_arc", f"init_from={out['v']}", f"dataset.root={latents}",
                             f"trainer.max_steps={args.arc_steps}"], work / "arc")
    out["latents"] = latents
    return out


def reference_embeddings(pre, latents: Path, limit: int) -> np.ndarray:
    """Log-mel statistics of the training audio (training latents decoded by ``pre.autoencoder``)."""
    from safetensors.torch import load_file

    from musicdiff.evaluation.embedders import MelStatsEmbedder

    clips = []
    for shard in sorted(latents.rglob("*.safetensors")):
        for key, value in load_file(str(shard)).items():
            if value.ndim == 2 and value.shape[0] == pre.autoencoder.latent_dim and len(clips) < limit:
                with torch.no_grad():
                    clips.append(pre.autoencoder.decode(value[None].float())[0].clamp(-1, 1))
    if not clips:
        raise SystemExit(f"no latent tensors found under {latents}")
    return MelStatsEmbedder().embed_audio(clips, int(pre.sample_rate))


def evaluate(pre, objective: str, sampler: str, steps: int, cfg: float, per_note: int, ref: np.ndarray) -> dict:
    """Generate ``per_note`` clips per note; accuracy, FD and compute seconds per audio second."""
    from musicdiff.evaluation.embedders import MelStatsEmbedder
    from musicdiff.evaluation.frechet import diagonal_frechet_distance
    from musicdiff.sampling import Generator

    spec = instantiate(OmegaConf.merge(OmegaConf.load(CONF / f"{sampler}.yaml"), {"steps": steps, "cfg_scale": cfg}))
    gen = Generator(pre.autoencoder, pre.dit, pre.conditioner, spec, window_latents=pre.window_latents(1.0),
                    decode_chunk_latents=None, objective=objective)
    rows = [(f"{inst} playing {note} at 120 bpm panned center", seed, note)
            for note in ROOTS for seed, inst in enumerate((INSTRUMENTS * per_note)[:per_note])]
    clips, hits, start = [], [], time.perf_counter()
    for prompt, seed, want in rows:
        audio = gen.generate(prompt, durations=1.0, seeds=seed)[0]
        clips.append(audio)
        hits.append(dominant_note(audio.T.numpy(), gen.sample_rate)[0] == want)
    seconds = time.perf_counter() - start
    emb = MelStatsEmbedder().embed_audio(clips, int(gen.sample_rate))
    return {"acc": float(np.mean(hits)), "fd": diagonal_frechet_distance(emb, ref),
            "compute_per_audio_s": seconds / len(rows)}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["model"] for r in results):
        rs = [r for r in results if r["model"] == name]
        for ax, key in zip(axes, ("acc", "fd")):
            ax.plot([r["compute_per_audio_s"] for r in rs], [r[key] for r in rs], "o-", label=name)
            for r in rs:
                ax.annotate(str(r["steps"]), (r["compute_per_audio_s"], r[key]), fontsize=7)
    axes[0].set(xscale="log", xlabel="compute s per audio s", ylabel="prompted-pitch accuracy")
    axes[1].set(xscale="log", xlabel="compute s per audio s", ylabel="FD (log-mel stats) vs training audio")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True, help="directory of the models and the outputs")
    p.add_argument("--autoencoder", default=None, help="an existing tiny autoencoder (default: train the pipeline)")
    p.add_argument("--models", nargs="+", default=["v", "rf", "arc"], choices=["v", "rf", "arc"])
    p.add_argument("--dit-steps", type=int, default=800)
    p.add_argument("--arc-steps", type=int, default=400)
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32, 50, 100])
    p.add_argument("--per-note", type=int, default=5, help="clips per note (4 notes)")
    p.add_argument("--from-json", action="store_true",
                   help="only rewrite the table and plot from --work/time_to_quality.json (no generation)")
    args = p.parse_args(argv)
    if args.from_json:
        results = json.loads((Path(args.work) / "time_to_quality.json").read_text())
        write_outputs(results, Path(args.work))
        return results
    from musicdiff.diffusion import objective_of
    from musicdiff.pretrained import load_pretrained

    paths = models(args)  # trains what is missing (with gradients)
    torch.set_grad_enabled(False)
    results = []
    ref = None
    for name in args.models:
        pre = load_pretrained(paths[name])
        if ref is None:
            ref = reference_embeddings(pre, paths["latents"], limit=64)
        objective = objective_of(pre.config.get("diffusion"))  # recorded by each export
        sampler, cfg = ("flow_pingpong", 1.0) if name == "arc" else ("dpmpp_2m", 4.0)
        for steps in args.steps:
            r = {"model": name, "sampler": sampler, "cfg": cfg, "steps": steps,
                 **evaluate(pre, objective, sampler, steps, cfg, args.per_note, ref)}
            results.append(r)
            print(f"{name:<4} {sampler:<14} cfg={cfg:<4} steps={steps:<4} s/s={r['compute_per_audio_s']:.3f} "
                  f"acc={r['acc']:.2f} FD={r['fd']:.2f}", flush=True)
    write_outputs(results, Path(args.work))
    return results


def dit_evaluations(r: dict) -> int:
    """DiT evaluations per clip: one per step, two with CFG (conditional and unconditional)."""
    return r["steps"] * (2 if r["cfg"] != 1.0 else 1)


def write_outputs(results: list[dict], work: Path) -> None:
    """``time_to_quality.md`` (table), ``.json`` and ``.png`` (plot) into ``work``; prints the table."""
    best = max((r for r in results if r["model"] != "arc"), key=lambda r: r["steps"])
    lines = ["| model | sampler | CFG | steps | DiT evaluations | compute s / audio s | accuracy | FD | compute vs "
             f"{best['model']} {best['steps']} steps |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['sampler']} | {r['cfg']} | {r['steps']} | {dit_evaluations(r)} | "
                     f"{r['compute_per_audio_s']:.3f} | {r['acc']:.2f} | {r['fd']:.2f} | "
                     f"{best['compute_per_audio_s'] / r['compute_per_audio_s']:.1f}x |")
    (work / "time_to_quality.md").write_text("\n".join(lines) + "\n")
    (work / "time_to_quality.json").write_text(json.dumps(results, indent=1))
    plot(results, work / "time_to_quality.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
