"""SA2 prompt building: caption probability, random subsets/order/case, field names, determinism."""

from __future__ import annotations

import random

import pytest

from musicdiff.data.prompts import PromptBuilder, apply_case

META = {"caption": "A calm piano piece", "genre": "Ambient", "mood": ["Calm", "Dreamy"],
        "instruments": ["Piano", "Strings"], "bpm": 90, "key": "C major", "path": "x.wav"}
VALUES = {"genre": "Ambient", "mood": "Calm, Dreamy", "instruments": "Piano, Strings", "bpm": "90",
          "key": "C major"}


def _prompts(builder, n=400, meta=META):
    return [builder(meta, random.Random(s)) for s in range(n)]


def test_fixed_seed_is_deterministic():
    b = PromptBuilder()
    assert _prompts(b, 50) == _prompts(b, 50)
    assert len(set(_prompts(b, 50))) > 10


def test_caption_probability():
    always = PromptBuilder(caption_prob=1.0)
    assert set(_prompts(always, 20)) == {"A calm piano piece"}
    never = _prompts(PromptBuilder(caption_prob=0.0))
    assert "A calm piano piece" not in never
    half = _prompts(PromptBuilder(caption_prob=0.5))
    frac = half.count("A calm piano piece") / len(half)
    assert 0.4 < frac < 0.6
    # no metadata fields -> caption even with caption_prob 0; nothing at all -> empty prompt
    assert PromptBuilder(caption_prob=0.0)({"caption": "only"}, random.Random(0)) == "only"
    assert PromptBuilder()({"path": "x.wav"}, random.Random(0)) == ""


def test_metadata_prompts_use_random_subsets_orders_and_cases():
    b = PromptBuilder(caption_prob=0.0, field_names_prob=0.0, separators=(", ",))
    sizes, firsts, cases = set(), set(), set()
    for p in _prompts(b):
        low = p.lower()
        present = [k for k, v in VALUES.items() if v.lower() in low]
        assert present, p
        assert "x.wav" not in low  # paths are never prompt material
        sizes.add(len(present))
        firsts.add(min(present, key=lambda k: low.index(VALUES[k].lower())))
        cases.add("upper" if p.isupper() else "lower" if p.islower() else "title" if p == p.title() else "other")
        if "90" in p:
            assert "90 bpm" in low  # a bare number gets its unit without field names
    assert sizes == {1, 2, 3, 4, 5}
    assert firsts == set(VALUES)  # every field can come first: order is shuffled
    assert {"upper", "lower", "title"} <= cases


def test_field_names_and_separators():
    named = _prompts(PromptBuilder(caption_prob=0.0, field_names_prob=1.0, cases=("unchanged",)))
    assert all(any(f"{label}: " in p for label in ("Genre", "Mood", "Instruments", "BPM", "Key")) for p in named)
    assert any(" | " in p for p in named) and any(", Mood: " in p or ", Genre: " in p for p in named)
    bare = _prompts(PromptBuilder(caption_prob=0.0, field_names_prob=0.0, cases=("unchanged",)))
    assert not any("Genre:" in p or "Key:" in p for p in bare)
    half = _prompts(PromptBuilder(caption_prob=0.0, cases=("unchanged",), min_fields=5))
    frac = sum("Genre: " in p for p in half) / len(half)
    assert 0.4 < frac < 0.6


def test_explicit_fields_and_limits():
    b = PromptBuilder(fields=["genre", "missing"], caption_prob=0.0, field_names_prob=0.0, cases=("lower",))
    assert set(_prompts(b, 20)) == {"ambient"}
    b = PromptBuilder(fields=None, caption_prob=0.0, max_fields=2, separators=(" | ",), field_names_prob=1.0)
    assert all(p.count("|") <= 1 for p in _prompts(b, 100))


def test_invalid_arguments():
    with pytest.raises(ValueError, match="caption_prob"):
        PromptBuilder(caption_prob=1.5)
    with pytest.raises(ValueError, match="min_fields"):
        PromptBuilder(min_fields=3, max_fields=2)
    with pytest.raises(ValueError, match="unknown case"):
        PromptBuilder(cases=("sarcastic",))
    assert apply_case("Hello World", "upper") == "HELLO WORLD"
