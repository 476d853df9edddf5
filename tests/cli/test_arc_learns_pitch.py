"""Learning test of ARC post-training on the tiny pipeline (issue 15).

The session's tiny v-objective DiT (``tiny_pipeline_paths``, shared with the pitch test) is
post-trained with ``musicdiff-train experiment=tiny_arc init_from=<its export>``; generations from
prompts naming a pitch (10 clips per note, 40 in all) are then compared:

* base model, DPM-Solver++(2M) 50 steps with CFG 4 (the reference quality);
* base model, ping-pong 8 steps without CFG (what few-step sampling gives without post-training);
* ARC model, ping-pong 8 and 4 steps without CFG.

Quality is the prompted-pitch accuracy and the Fréchet distance of log-mel statistics
(``MelStatsEmbedder``) against the training audio (the training latents decoded by the same
autoencoder). The criterion of the issue, as asserted: the ARC model at 8 steps without CFG reaches the base
model's 50-step CFG accuracy, the 8-step base model is clearly worse in accuracy and FD, and ARC
closes at least half of the 8-step base model's FD gap to the CFG model at 8 and at 4 steps. The
4-step *accuracy* is reported, not asserted: it reaches the CFG model's for some seeds only.

Measured on the development machine (session pipeline: autoencoder 300 / v DiT 800 steps;
``experiment=tiny_arc``; 40 clips per row; one thread, deterministic per seed). Accuracy / FD:

===========================  ===========  ===========  ===========  ===========  ============
setting                      400 steps    400, seed 2  400, seed 3  200 steps    200, seed 2
===========================  ===========  ===========  ===========  ===========  ============
base DPM++ 50 steps, CFG 4   0.70 / 300
base ping-pong 8, no CFG     0.575 / 596
ARC ping-pong 8, no CFG      0.75 / 341   0.725 / 340  0.80 / 331   0.725 / 351  0.475 / 475
ARC ping-pong 4, no CFG      0.625 / 339  0.50 / 372   0.675 / 340  0.75 / 354   0.425 / 526
===========================  ===========  ===========  ===========  ===========  ============

With 200 ARC steps (seed 1 also passes: 0.70 / 366) one seed in three misses the 8-step accuracy,
hence 400 steps. Cost beyond the shared pipeline: ~80 s of ARC training at 5 steps/s on an idle
core plus ~40 s of generation (207 s measured on a busy shared machine; 200 steps: 87-93 s).
See ``docs/FEW_STEP.md``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.tiny_pipeline import INSTRUMENTS, ROOTS, dominant_note

CONF = Path(__file__).resolve().parents[2] / "conf"
ARC_STEPS = 400  # 200 generator + 200 discriminator updates (see the docstring for 200)
PER_NOTE = 10    # clips per prompted note (40 per setting: one clip is 2.5 points of accuracy)


def _training_audio_embeddings(pre, latents: Path) -> np.ndarray:
    """Log-mel statistics of the training audio: every training latent decoded by ``pre.autoencoder``."""
    from safetensors.torch import load_file

    from musicdiff.evaluation.embedders import MelStatsEmbedder

    clips = [pre.autoencoder.decode(value[None].float())[0].clamp(-1, 1)
             for shard in sorted(Path(latents).rglob("*.safetensors")) for value in load_file(str(shard)).values()
             if value.ndim == 2 and value.shape[0] == pre.autoencoder.latent_dim]
    assert len(clips) >= 16, f"too few training latents under {latents}"
    return MelStatsEmbedder().embed_audio(clips, int(pre.sample_rate))


def _quality(pre, objective: str, sampler: str, steps: int, cfg: float, reference: np.ndarray) -> dict:
    """Prompted-pitch accuracy, FD against ``reference`` and the ``(wanted, detected, Hz)`` rows."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from musicdiff.evaluation.embedders import MelStatsEmbedder
    from musicdiff.evaluation.frechet import diagonal_frechet_distance
    from musicdiff.sampling import Generator

    spec = instantiate(OmegaConf.merge(OmegaConf.load(CONF / "sampler" / f"{sampler}.yaml"),
                                       {"steps": steps, "cfg_scale": cfg}))
    gen = Generator(pre.autoencoder, pre.dit, pre.conditioner, spec, window_latents=pre.window_latents(1.0),
                    decode_chunk_latents=None, objective=objective)
    rows = [(f"{inst} playing {note} at 120 bpm panned center", seed, note)
            for note in ROOTS for seed, inst in enumerate((INSTRUMENTS * PER_NOTE)[:PER_NOTE])]
    clips, detected = [], []
    for prompt, seed, want in rows:
        audio = gen.generate(prompt, durations=1.0, seeds=seed)[0]
        assert torch.isfinite(audio).all()
        clips.append(audio)
        detected.append((want, *dominant_note(audio.T.numpy(), gen.sample_rate)))
    fd = diagonal_frechet_distance(MelStatsEmbedder().embed_audio(clips, int(gen.sample_rate)), reference)
    return {"acc": float(np.mean([w == g for w, g, _ in detected])), "fd": fd, "rows": detected}


@pytest.mark.slow
def test_arc_few_step_generations_match_the_base_models_50_step_cfg(tmp_path, tiny_pipeline_paths):
    from musicdiff.cli.train import train
    from musicdiff.diffusion import objective_of
    from musicdiff.pretrained import load_pretrained
    from tests.conftest import compose_root

    base_export, latents, log_dir = (tiny_pipeline_paths[k] for k in ("dit", "latents", "log_dir"))
    metrics = train(compose_root("train", [
        "experiment=tiny_arc", f"init_from={base_export}", f"dataset.root={latents}",
        f"trainer.max_steps={ARC_STEPS}", "task.demo_prompts=[]", "trainer.checkpoint_every=100000",
        f"paths.output_dir={tmp_path / 'arc'}", f"paths.log_dir={log_dir}", "trainer.progress=false", "logger=none"]))
    assert metrics["skipped_nonfinite"] == 0

    with torch.no_grad():  # not torch.set_grad_enabled(False): that would leak into later tests
        base, arc = load_pretrained(base_export), load_pretrained(tmp_path / "arc" / "export")
        objective = objective_of(arc.config.get("diffusion"))
        assert objective == objective_of(base.config.get("diffusion"))  # the export records the base's objective
        reference = _training_audio_embeddings(base, latents)
        q = {
            "base_dpmpp50_cfg4": _quality(base, objective, "dpmpp_2m", 50, 4.0, reference),
            "base_pingpong8": _quality(base, objective, "flow_pingpong", 8, 1.0, reference),
            "arc_pingpong8": _quality(arc, objective, "flow_pingpong", 8, 1.0, reference),
            "arc_pingpong4": _quality(arc, objective, "flow_pingpong", 4, 1.0, reference),
        }
    (tmp_path / "arc_quality.json").write_text(json.dumps(q))
    summary = {k: (v["acc"], round(v["fd"], 1)) for k, v in q.items()}
    acc, fd = ({k: v[key] for k, v in q.items()} for key in ("acc", "fd"))
    # 8 steps without CFG reach the base model's 50-step CFG accuracy (one clip of slack in 40) ...
    assert acc["arc_pingpong8"] >= acc["base_dpmpp50_cfg4"] - 0.025, summary
    # ... where the base model at 8 steps is clearly worse, in accuracy and in FD
    assert acc["base_pingpong8"] <= acc["arc_pingpong8"] - 0.1, summary
    assert fd["base_pingpong8"] >= 1.5 * fd["base_dpmpp50_cfg4"], summary
    # ARC closes at least half of the 8-step FD gap to the CFG model (8 and 4 steps)
    for key in ("arc_pingpong8", "arc_pingpong4"):
        assert fd[key] <= fd["base_pingpong8"] - 0.5 * (fd["base_pingpong8"] - fd["base_dpmpp50_cfg4"]), summary
