"""trainer.precision: one name and one vocabulary with generator.precision (fp32 | bf16 | fp16)."""

from __future__ import annotations

import pytest

from musicdiff.training.accelerator import resolve_precision
from musicdiff.training.trainer import Trainer


def test_precision_words_map_to_accelerate_and_the_old_key_still_reads():
    assert [resolve_precision(p) for p in ("fp32", "no", "bf16", "fp16")] == ["no", "no", "bf16", "fp16"]
    assert Trainer(precision="bf16").mixed_precision == "bf16" and Trainer().mixed_precision == "no"
    with pytest.warns(FutureWarning, match="trainer.mixed_precision is deprecated, use trainer.precision"):
        assert Trainer(mixed_precision="fp16").mixed_precision == "fp16"
    with pytest.raises(ValueError, match="trainer.precision must be fp32|bf16|fp16, got 'fp8'"):
        Trainer(precision="fp8")


def test_configs_use_precision(compose_cfg):
    for trainer in ("cpu", "gpu", "deepspeed_zero2"):
        cfg = compose_cfg("train", [f"trainer={trainer}"]).trainer
        assert "mixed_precision" not in cfg and cfg.precision in ("fp32", "bf16")
