"""Learning test of ARC post-training on the tiny pipeline (issue 15).

The session's tiny v-objective DiT (``tiny_pipeline_paths``, shared with the pitch test) is
post-trained with ``musicdiff-train experiment=tiny_arc init_from=<its export>``; generations from
prompts naming a pitch are then compared:

* base model, DPM-Solver++(2M) 50 steps with CFG 4 (the reference quality);
* base model, ping-pong 8 steps without CFG (what few-step sampling gives without post-training);
* ARC model, ping-pong 8 and 4 steps without CFG.

The pass criterion of the issue: the ARC model at 8 (and 4) steps without CFG reaches the base
model's 50-step CFG accuracy (one clip of slack in 20), while the base model at 8 steps is clearly
worse.

Status: opt-in. Measured once on the development machine with a *reduced* base (autoencoder 113
steps, v DiT 400 steps instead of the session pipeline's 300 / 800), whose 50-step CFG accuracy was
at chance (0.20: every clip came out G4), so the run says nothing about ARC: base 50-step CFG 0.20,
base ping-pong 8 steps 0.15, ARC ping-pong 8 steps 0.25, 4 steps 0.20 (ARC 400 steps: the
discriminator wins, dis loss 0.30, generator loss 2.1, contrastive loss 0.66). Run it with the full
session pipeline (``MUSICDIFF_ARC_LEARNING=1``) before making it a CI test.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.tiny_pipeline import ROOTS, dominant_note

CONF = Path(__file__).resolve().parents[2] / "conf"
ARC_STEPS = 400  # 200 generator + 200 discriminator updates


def _accuracy(pre, objective: str, sampler: str, steps: int, cfg: float) -> tuple[float, list]:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from musicdiff.sampling import Generator

    spec = instantiate(OmegaConf.merge(OmegaConf.load(CONF / "sampler" / f"{sampler}.yaml"),
                                       {"steps": steps, "cfg_scale": cfg}))
    gen = Generator(pre.autoencoder, pre.dit, pre.conditioner, spec, window_latents=pre.window_latents(1.0),
                    decode_chunk_latents=None, objective=objective)
    rows = [(f"{inst} playing {note} at 120 bpm panned center", seed, note)
            for note in ROOTS for seed, inst in enumerate(["square", "saw"] * 2 + ["square"])]
    detected = []
    for prompt, seed, want in rows:
        audio = gen.generate(prompt, durations=1.0, seeds=seed)[0]
        assert torch.isfinite(audio).all()
        detected.append((want, *dominant_note(audio.T.numpy(), gen.sample_rate)))
    return float(np.mean([w == g for w, g, _ in detected])), detected


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("MUSICDIFF_ARC_LEARNING"), reason="opt-in (MUSICDIFF_ARC_LEARNING=1): ~10 min "
                    "of CPU beyond the shared tiny pipeline, and its pass criterion is not yet confirmed (see docstring)")
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

    torch.set_grad_enabled(False)
    base, arc = load_pretrained(base_export), load_pretrained(tmp_path / "arc" / "export")
    objective = objective_of(arc.config.get("diffusion"))
    assert objective == objective_of(base.config.get("diffusion"))  # the export records the base's objective
    results = {
        "base_dpmpp50_cfg4": _accuracy(base, objective, "dpmpp_2m", 50, 4.0),
        "base_pingpong8": _accuracy(base, objective, "flow_pingpong", 8, 1.0),
        "arc_pingpong8": _accuracy(arc, objective, "flow_pingpong", 8, 1.0),
        "arc_pingpong4": _accuracy(arc, objective, "flow_pingpong", 4, 1.0),
    }
    (tmp_path / "arc_accuracy.json").write_text(json.dumps(results))
    acc = {k: v[0] for k, v in results.items()}
    assert acc["arc_pingpong8"] >= acc["base_dpmpp50_cfg4"] - 0.05, acc
    assert acc["arc_pingpong4"] >= acc["base_dpmpp50_cfg4"] - 0.05, acc
    assert acc["base_pingpong8"] <= acc["arc_pingpong8"] - 0.2, acc
