"""Fixtures of the adapter tests: a tiny base model export to fine-tune from."""

from __future__ import annotations

import pytest

from tests.conftest import compose_root

# The tiny experiment, small and fast: 8 synthetic items, batch 2, one short demo prompt.
TINY = ["experiment=tiny", "logger=none", "dataset.num_items=8", "trainer.batch_size=2", "trainer.progress=false",
        "trainer.checkpoint_every=2", "task.demo_prompts=[square playing C4]", "task.demo_seconds=0.5",
        "sampler.steps=4", "trainer.log_every=1"]


@pytest.fixture(scope="session")
def base_export(tmp_path_factory):
    """A tiny base model exported by a 2-step run (DiT + conditioner + autoencoder)."""
    from musicdiff.cli.train import train

    root = tmp_path_factory.mktemp("adapter_base")
    train(compose_root("train", [*TINY, "trainer.max_steps=2", "task.demo_prompts=[]",
                                 f"paths.log_dir={root / 'outputs'}", f"paths.output_dir={root / 'base'}"]))
    return root / "base" / "export"
