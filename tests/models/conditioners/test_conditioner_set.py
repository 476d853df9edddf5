"""Tests of ConditionerSet routing (SAO layout: prompt + timing tokens, timing global vector)."""

from __future__ import annotations

import pytest
import torch

from musicdiff.models.conditioners import ConditionerSet, LUTConditioner, NumberConditioner


def _set(**kw) -> ConditionerSet:
    torch.manual_seed(0)
    conds = {
        "prompt": LUTConditioner(16, vocab_size=128, max_tokens=4),
        "seconds_start": NumberConditioner(16),
        "seconds_total": NumberConditioner(16),
    }
    args = dict(
        conditioners=conds,
        cross_attn_ids=["prompt", "seconds_start", "seconds_total"],
        global_ids=["seconds_start", "seconds_total"],
        cond_dim=16,
        global_cond_dim=32,
    )
    args.update(kw)
    return ConditionerSet(**args)


META = [
    {"prompt": "calm piano", "seconds_start": 0.0, "seconds_total": 30.0, "path": "a.wav"},
    {"prompt": ["drums and bass"], "seconds_start": [12.0], "seconds_total": [95.0], "path": "b.wav"},
]


def test_output_layout():
    cs = _set()
    out = cs(META, "cpu")
    assert out["cross_attn_cond"].shape == (2, 6, 16)
    assert out["cross_attn_mask"].tolist() == [[True, True, False, False, True, True], [True] * 3 + [False, True, True]]
    assert out["global_cond"].shape == (2, 32)
    start, _ = cs.conditioners["seconds_start"]([0.0, 12.0], "cpu")
    total, _ = cs.conditioners["seconds_total"]([30.0, 95.0], "cpu")
    # timing tokens at the end of the sequence, and start ‖ total as the global vector
    torch.testing.assert_close(out["cross_attn_cond"][:, 4], start[:, 0])
    torch.testing.assert_close(out["cross_attn_cond"][:, 5], total[:, 0])
    torch.testing.assert_close(out["global_cond"], torch.cat([start[:, 0], total[:, 0]], dim=-1))


def test_input_keys_and_missing_fields():
    cs = _set(input_keys={"prompt": "caption"})
    out = cs([{"caption": "x y", "seconds_start": 0, "seconds_total": 1}], "cpu")
    assert out["cross_attn_mask"][0, :2].all()
    with pytest.raises(ValueError, match="no metadata field 'caption'"):
        cs(META, "cpu")


def test_field_defaults_fill_items_without_the_field():
    cs = _set(field_defaults={"seconds_start": 12.0})
    given = cs([{"prompt": "drums and bass", "seconds_start": 12.0, "seconds_total": 95.0}], "cpu")
    filled = cs([{"prompt": "drums and bass", "seconds_total": 95.0}], "cpu")
    torch.testing.assert_close(filled["global_cond"], given["global_cond"])
    with pytest.raises(ValueError, match="no metadata field 'seconds_total'.*field_defaults"):
        cs([{"prompt": "x", "seconds_start": 0.0}], "cpu")


def test_validation_errors():
    with pytest.raises(ValueError, match="global_cond_dim"):
        _set(global_cond_dim=16)
    with pytest.raises(ValueError, match="cond_dim"):
        _set(cond_dim=8, global_cond_dim=32)
    with pytest.raises(ValueError, match="not defined"):
        _set(cross_attn_ids=["prompt", "genre"])


def test_no_routes_gives_none():
    cs = _set(cross_attn_ids=[], global_ids=[], global_cond_dim=0)
    assert cs(META, "cpu") == {"cross_attn_cond": None, "cross_attn_mask": None, "global_cond": None}
