"""Proof that a LoRA learns something the base never heard (issue 12 §5).

Base: the tiny pipeline of ``tests/helpers/tiny_pipeline.py`` (autoencoder + DiT trained on square/saw
notes C4 E4 G4 B4 named as such, shared with the pitch test through ``tiny_pipeline_paths``).
Fine-tuning set: the base's own latent shards with the notes named in solfège (``do mi sol si``,
:func:`~tests.helpers.tiny_pipeline.rename_notes`): audio the autoencoder can express, prompt words the
base never saw (the hashed-word LUT conditioner gives them frozen random embeddings). A LoRA
(``adapter=lora``, base and conditioners frozen) is trained with ``init_from=<base export>``; then
``musicdiff-generate checkpoint=<base> adapters=[adapter.safetensors:1]`` must play the prompted note for
"square playing sol ...", the base must not, and the adapter at scale 0 must be the base bit for bit.
A full fine-tune (DiT and word-embedding conditioner trained, ``task.freeze=[]``, same data) must do the
same.

Measured on a reused and on a freshly trained base, same numbers (seeds fixed, 20 clips = 4 notes x 5 seeds,
prompted-pitch accuracy): base on the solfège prompts 0.25 (chance: it plays B4 for every prompt), and
the adapter at scale 0 gives the same clips bit for bit; LoRA rank 16, lr 5e-3, 120 steps: 0.75 (lr 3e-3,
200 steps: 0.75); full fine-tune, lr 1e-3, 200 steps: 0.75 (120 steps: 0.55; lr 3e-3, 120 steps: 0.65).
The issue's target is >= 0.7. The misses are the base's own: on the note-name prompts it reaches 0.60
(E4 often comes out as G4, B4 as A4), so the new words are followed as well as the old names; a weaker
base (the pitch test accepts >= 0.55) would pull these numbers down with it. Runtime here: 56-120 s (LoRA,
three generation passes) + 46-70 s (full) on top of the shared base, by machine load.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from musicdiff.pretrained import load_pretrained
from tests.helpers.tiny_pipeline import ROOTS, prompted_pitch_accuracy, rename_notes

SOLFEGE = {"C4": "do", "E4": "mi", "G4": "sol", "B4": "si"}
LORA_STEPS = 120
FULL_STEPS = 200


def _fine_tune(paths, latents, out_dir, steps, extra):
    from musicdiff.cli.train import train
    from tests.conftest import compose_root

    metrics = train(compose_root("train", [
        "experiment=tiny", "dataset=latents", f"dataset.root={latents}", "dataset.window_seconds=1.0",
        "dataset.prompt_builder.caption_prob=1.0", f"init_from={paths['dit']}", f"trainer.max_steps={steps}",
        "trainer.checkpoint_every=100000", "task.demo_prompts=[]", f"paths.output_dir={out_dir}",
        f"paths.log_dir={paths['log_dir']}", "trainer.progress=false", "logger=none", *extra]))
    assert metrics["skipped_nonfinite"] == 0
    return out_dir / "export"


@pytest.fixture(scope="module")
def solfege_latents(tiny_pipeline_paths, tmp_path_factory):
    return rename_notes(tiny_pipeline_paths["latents"], tmp_path_factory.mktemp("solfege") / "latents", SOLFEGE)


@pytest.mark.slow
def test_lora_learns_new_words_and_scale_zero_is_the_base(tiny_pipeline_paths, solfege_latents, tmp_path):
    paths = tiny_pipeline_paths
    export = _fine_tune(paths, solfege_latents, tmp_path / "lora", LORA_STEPS,
                        ["adapter=lora", "adapter.rank=16", "adapter.alpha=32", "optim.lr=5e-3"])
    adapter = export / "adapter.safetensors"
    assert adapter.is_file()

    log_dir = paths["log_dir"]
    base_acc, base_rows = prompted_pitch_accuracy(paths["dit"], ROOTS, tmp_path / "gen_base", log_dir, names=SOLFEGE)
    zero_acc, zero_rows = prompted_pitch_accuracy(paths["dit"], ROOTS, tmp_path / "gen_zero", log_dir, names=SOLFEGE,
                                                  extra=[f"adapters=[{adapter}:0]"])
    lora_acc, lora_rows = prompted_pitch_accuracy(paths["dit"], ROOTS, tmp_path / "gen_lora", log_dir, names=SOLFEGE,
                                                  extra=[f"adapters=[{adapter}:1.0]"])
    (tmp_path / "pitch_accuracy.json").write_text(json.dumps({"base": [base_acc, base_rows],
                                                              "lora": [lora_acc, lora_rows]}))
    # The base does not know the words (measured 0.25 = chance); the LoRA plays the prompted note (0.75).
    assert base_acc <= 0.4, base_rows
    assert lora_acc >= 0.7, lora_rows
    # at scale 0 the generation is the base's, sample for sample
    assert zero_rows == base_rows
    clips = sorted(p.name for p in (tmp_path / "gen_base" / "audio").glob("*.wav"))
    assert len(clips) == len(base_rows)
    for name in clips:
        want, _ = sf.read(tmp_path / "gen_base" / "audio" / name)
        got, _ = sf.read(tmp_path / "gen_zero" / "audio" / name)
        assert np.array_equal(want, got), name

    # the trained adapter at scale 0 is the base DiT exactly (and at scale 1 it is not)
    base = load_pretrained(paths["dit"], parts=("dit",)).dit
    zero = load_pretrained(paths["dit"], parts=("dit",), adapters=[f"{adapter}:0"]).dit
    one = load_pretrained(paths["dit"], parts=("dit",), adapters=[f"{adapter}:1"]).dit
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, base.io_channels, 50, generator=g), torch.tensor([0.2, 0.7])
    cond = torch.randn(2, 18, base.cond_token_dim, generator=g)
    glob = torch.randn(2, base.global_cond_dim, generator=g)
    with torch.no_grad():
        assert torch.equal(zero(x, t, cond, None, glob), base(x, t, cond, None, glob))
        assert (one(x, t, cond, None, glob) - base(x, t, cond, None, glob)).abs().max() > 1e-3


@pytest.mark.slow
def test_full_fine_tune_learns_new_words(tiny_pipeline_paths, solfege_latents, tmp_path):
    paths = tiny_pipeline_paths
    export = _fine_tune(paths, solfege_latents, tmp_path / "full", FULL_STEPS, ["optim.lr=1e-3"])
    acc, rows = prompted_pitch_accuracy(export, ROOTS, tmp_path / "gen", paths["log_dir"], names=SOLFEGE)
    (tmp_path / "pitch_accuracy.json").write_text(json.dumps({"full": [acc, rows]}))
    # measured 0.75, from the base's 0.25
    assert acc >= 0.7, rows
