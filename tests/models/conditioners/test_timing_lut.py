"""Tests of the timing (number) and lookup-table conditioners."""

from __future__ import annotations

import pytest
import torch

from musicdiff.models.conditioners import LUTConditioner, NumberConditioner
from musicdiff.models.conditioners.lut import hash_words


def test_number_conditioner_shapes_clamp_and_layout():
    torch.manual_seed(0)
    cond = NumberConditioner(24, min_val=0, max_val=512)
    emb, mask = cond([0, 3.5, 600, -5, 512], "cpu")
    assert emb.shape == (5, 1, 24) and mask.shape == (5, 1) and mask.all()
    torch.testing.assert_close(emb[2], emb[4])  # 600 clamps to 512
    torch.testing.assert_close(emb[3], emb[0])  # -5 clamps to 0
    assert not torch.allclose(emb[0], emb[1])
    # stable-audio-tools NumberConditioner layout (learned Fourier features + linear)
    sd = cond.state_dict()
    assert sd["embedder.embedding.0.weights"].shape == (128,)
    assert sd["embedder.embedding.1.weight"].shape == (24, 257)


def test_number_conditioner_learns_and_rejects_text():
    cond = NumberConditioner(8)
    emb, _ = cond([10.0, 20.0], "cpu")
    emb.sum().backward()
    assert cond.embedder.embedding[0].weights.grad is not None
    with pytest.raises(ValueError, match="numbers"):
        cond(["ten"], "cpu")
    with pytest.raises(ValueError, match="max_val"):
        NumberConditioner(8, min_val=5, max_val=5)


def test_hash_words_is_stable():
    ids = hash_words("A calm, calm Piano!", 1024, 16)
    assert len(ids) == 4 and ids[1] == ids[2] and all(1 <= i < 1024 for i in ids)
    assert ids == hash_words("a CALM calm piano", 1024, 16)


def test_lut_conditioner_masks_and_zeroes_padding():
    torch.manual_seed(0)
    cond = LUTConditioner(12, vocab_size=64, max_tokens=6)
    emb, mask = cond(["calm piano", "one two three four five six seven", ""], "cpu")
    assert emb.shape == (3, 6, 12) and mask.dtype == torch.bool
    assert mask.sum(dim=1).tolist() == [2, 6, 0]
    assert emb[0, 2:].abs().sum() == 0 and emb[2].abs().sum() == 0
    # same words -> same tokens; order matters through the position embedding
    again, _ = cond(["calm piano"], "cpu")
    torch.testing.assert_close(again[0], emb[0])
    swapped, _ = cond(["piano calm"], "cpu")
    assert not torch.allclose(swapped[0, :2], emb[0, :2])
    with pytest.raises(ValueError, match="strings"):
        cond([3], "cpu")
