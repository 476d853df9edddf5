"""Tests of the T5 and CLAP text conditioners on tiny local random-weight models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.models.conditioners import CLAPTextConditioner, T5Conditioner

CONF = Path(__file__).resolve().parents[3] / "conf"
PROMPTS = ["a calm piano melody", "energetic drums and deep bass with a long distorted guitar solo"]


def test_t5_conditioner(_tiny_text_models):
    t5_path, _ = _tiny_text_models
    cond = T5Conditioner(48, model_name=t5_path, max_length=20)
    emb, mask = cond(PROMPTS, "cpu")
    assert emb.shape == (2, 20, 48) and mask.shape == (2, 20) and mask.dtype == torch.bool
    assert mask[1].all() and not mask[0].all()  # truncated vs padded
    assert emb[0][~mask[0]].abs().sum() == 0  # padded positions zeroed
    # frozen encoder: not a parameter, not in the state dict; only the projection is
    assert all(not k.startswith("model.") for k in cond.state_dict())
    assert {n for n, _ in cond.named_parameters()} == {"proj_out.weight", "proj_out.bias"}
    assert not any(p.requires_grad for p in cond.model.parameters())
    again, _ = cond(PROMPTS[:1], "cpu")
    torch.testing.assert_close(again[0], emb[0])


def test_trainable_is_the_one_name_and_old_keys_still_read(_tiny_text_models):
    t5_path, clap_path = _tiny_text_models
    trained = T5Conditioner(48, model_name=t5_path, max_length=8, trainable=True)
    assert any(k.startswith("model.") for k in trained.state_dict()) and trained.model.training
    with pytest.warns(FutureWarning, match="'enable_grad' is deprecated, use 'trainable'"):
        old = T5Conditioner(48, model_name=t5_path, max_length=8, enable_grad=True)
    assert old.trainable and any(p.requires_grad for p in old.model.parameters())
    with pytest.warns(FutureWarning, match="'finetune' is deprecated"):
        assert not CLAPTextConditioner(32, model_name=clap_path, finetune=False).trainable
    with pytest.raises(ValueError, match="trainable=True contradicts the deprecated enable_grad=False"), \
            pytest.warns(FutureWarning):
        T5Conditioner(48, model_name=t5_path, trainable=True, enable_grad=False)


def test_clap_conditioner(_tiny_text_models):
    _, clap_path = _tiny_text_models
    cond = CLAPTextConditioner(32, model_name=clap_path, max_length=20)
    emb, mask = cond(PROMPTS, "cpu")
    assert emb.shape == (2, 20, 32) and mask.shape == (2, 20)
    assert isinstance(cond.proj_out, torch.nn.Identity)  # hidden size 32 == output_dim
    assert emb[0][~mask[0]].abs().sum() == 0
    # next-to-last hidden layer (SA2)
    enc = cond.tokenizer(PROMPTS, truncation=True, max_length=20, padding="max_length", return_tensors="pt")
    ref = cond.model(**enc, output_hidden_states=True).hidden_states[-2] * enc["attention_mask"][..., None]
    torch.testing.assert_close(emb, ref)
    pooled = CLAPTextConditioner(32, model_name=clap_path, use_text_features=False)
    emb, mask = pooled(PROMPTS, "cpu")
    assert emb.shape == (2, 1, 32) and mask.all()


def test_missing_model_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="MUSICDIFF_T5_PATH"):
        T5Conditioner(8, model_name=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="MUSICDIFF_CLAP_PATH"):
        CLAPTextConditioner(8, model_name="not-a-real-org/not-a-real-clap")


@pytest.mark.parametrize("option", ["t5_timing", "clap_timing", "lut_timing_tiny"])
def test_conditioner_configs(option, text_model_env):
    root = OmegaConf.create({"conditioner": OmegaConf.load(CONF / "conditioner" / f"{option}.yaml")})
    cs = instantiate(root.conditioner)
    meta = [{"prompt": p, "seconds_start": 0.0, "seconds_total": 10.0} for p in PROMPTS]
    out = cs(meta, "cpu")
    assert out["cross_attn_cond"].shape[-1] == root.conditioner.cond_dim
    assert out["cross_attn_mask"].shape == out["cross_attn_cond"].shape[:2]
    assert out["global_cond"].shape == (2, root.conditioner.global_cond_dim)


def test_meta_device_builds_structure_without_weights(_tiny_text_models):
    t5_path, clap_path = _tiny_text_models
    with torch.device("meta"):
        t5 = T5Conditioner(64, model_name=t5_path)
        clap = CLAPTextConditioner(64, model_name=clap_path)
    assert next(t5.model.parameters()).is_meta and next(clap.model.parameters()).is_meta
    assert t5.proj_out.weight.is_meta
