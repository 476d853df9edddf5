"""Tests of the SA2 diffusion transformer: shapes, masks, init, checkpointing, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.models.dit import DiffusionTransformer
from musicdiff.models.dit.attention import Attention
from musicdiff.models.dit.rotary import RotaryEmbedding, apply_rotary

CONF = Path(__file__).resolve().parents[3] / "conf"


def _tiny(**kw) -> DiffusionTransformer:
    args = dict(io_channels=8, width=64, depth=2, num_heads=2, cond_token_dim=16, global_cond_dim=32)
    args.update(kw)
    return DiffusionTransformer(**args)


def _randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every weight (zero-initialised branches would hide bugs)."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(b=3, n=5, length=20):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(b, 8, length, generator=g),
        torch.rand(b, generator=g),
        torch.randn(b, n, 16, generator=g),
        torch.randn(b, 32, generator=g),
    )


def test_forward_shape_and_determinism():
    torch.manual_seed(0)
    model = _randomise(_tiny()).eval()
    x, t, c, g = _inputs()
    out = model(x, t, cross_attn_cond=c, global_cond=g)
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out, model(x, t, cross_attn_cond=c, global_cond=g))
    # batch items are independent
    torch.testing.assert_close(out[1:2], model(x[1:2], t[1:2], cross_attn_cond=c[1:2], global_cond=g[1:2]))
    # same seed -> same weights -> same output
    torch.manual_seed(0)
    other = _randomise(_tiny()).eval()
    torch.testing.assert_close(out, other(x, t, cross_attn_cond=c, global_cond=g))


def test_scalar_t_and_no_conditioning():
    model = _tiny(cond_token_dim=0, global_cond_dim=0)
    x = torch.randn(2, 8, 10)
    assert model(x, torch.tensor(0.5)).shape == x.shape
    assert not hasattr(model, "to_cond_embed") and not hasattr(model, "to_global_embed")


def test_zero_init_branches():
    """Every residual branch output and the 1x1 residual convs start at zero (SA2 §3.3)."""
    model = _tiny()
    for block in model.transformer.layers:
        assert block.self_attn.to_out.weight.abs().sum() == 0
        assert block.cross_attn.to_out.weight.abs().sum() == 0
        assert block.ff.ff[2].weight.abs().sum() == 0
    assert model.preprocess_conv.weight.abs().sum() == 0
    # with zero branches the conditioning cannot influence the output yet
    x, t, c, g = _inputs()
    torch.testing.assert_close(model(x, t, cross_attn_cond=c, global_cond=g), model(x, t, cross_attn_cond=-c, global_cond=-g))


def test_cross_attention_mask():
    model = _randomise(_tiny()).eval()
    x, t, c, g = _inputs()
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[:, 3:] = False
    changed = c.clone()
    changed[:, 3:] = 100.0
    out = model(x, t, cross_attn_cond=c, cross_attn_mask=mask, global_cond=g)
    torch.testing.assert_close(out, model(x, t, cross_attn_cond=changed, cross_attn_mask=mask, global_cond=g))
    assert not torch.allclose(out, model(x, t, cross_attn_cond=changed, global_cond=g))
    # an all-False row must not produce NaN
    out = model(x, t, cross_attn_cond=c, cross_attn_mask=torch.zeros(3, 5, dtype=torch.bool), global_cond=g)
    assert torch.isfinite(out).all()
    # the mask can be switched off (SAT/SAO behaviour)
    nomask = _tiny(use_cross_attn_mask=False)
    nomask.load_state_dict(model.state_dict())
    nomask.eval()
    torch.testing.assert_close(
        nomask(x, t, cross_attn_cond=changed, cross_attn_mask=mask, global_cond=g),
        model(x, t, cross_attn_cond=changed, global_cond=g),
    )


def test_gradient_checkpointing_matches():
    torch.manual_seed(1)
    model = _randomise(_tiny())
    x, t, c, g = _inputs()
    model.train()
    model(x, t, cross_attn_cond=c, global_cond=g).square().mean().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.gradient_checkpointing = True
    model(x, t, cross_attn_cond=c, global_cond=g).square().mean().backward()
    for a, p in zip(ref, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_rotary_is_relative_and_partial():
    """Rotated q·k depends only on the position offset; unrotated channels are untouched."""
    rope = RotaryEmbedding(8)
    freqs = rope(12)
    q, k = torch.randn(1, 1, 1, 16).expand(1, 1, 12, 16), torch.randn(1, 1, 1, 16).expand(1, 1, 12, 16)
    qr, kr = apply_rotary(q, freqs), apply_rotary(k, freqs)
    dots = (qr[0, 0] @ kr[0, 0].T)
    torch.testing.assert_close(dots[2, 5], dots[6, 9])
    torch.testing.assert_close(qr[..., 8:], q[..., 8:])
    torch.testing.assert_close(qr.norm(dim=-1), q.norm(dim=-1))
    assert _tiny().transformer.rotary_pos_emb.dim == 16  # half of the 32-dim heads


def test_grouped_kv_cross_attention():
    attn = Attention(64, dim_heads=16, dim_context=32)
    assert attn.num_heads == 4 and attn.kv_heads == 2
    out = attn(torch.randn(2, 7, 64), context=torch.randn(2, 3, 32))
    assert out.shape == (2, 7, 64)
    with pytest.raises(ValueError, match="share"):
        Attention(64, dim_heads=16, dim_context=48)


def test_bad_inputs():
    model = _tiny()
    with pytest.raises(ValueError, match="x must be"):
        model(torch.randn(2, 7, 10), torch.rand(2))
    with pytest.raises(ValueError, match="cond_token_dim"):
        model(torch.randn(2, 8, 10), torch.rand(2), cross_attn_cond=torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="divisible"):
        _tiny(width=60, num_heads=7)


def test_sat_parameter_layout():
    """Names/shapes follow stable-audio-tools so SAO checkpoints map by renaming."""
    sd = _tiny().state_dict()
    expected = {
        "timestep_features.weight": (128, 1),
        "to_timestep_embed.0.weight": (64, 256),
        "to_cond_embed.0.weight": (64, 16),
        "to_global_embed.2.weight": (64, 64),
        "preprocess_conv.weight": (8, 8, 1),
        "transformer.project_in.weight": (64, 8),
        "transformer.rotary_pos_emb.inv_freq": (8,),
        "transformer.layers.0.pre_norm.gamma": (64,),
        "transformer.layers.0.self_attn.to_qkv.weight": (192, 64),
        "transformer.layers.1.cross_attn.to_q.weight": (64, 64),
        "transformer.layers.1.cross_attn.to_kv.weight": (128, 64),
        "transformer.layers.1.ff.ff.0.proj.weight": (512, 64),
        "transformer.layers.1.ff.ff.2.bias": (64,),
        "postprocess_conv.weight": (8, 8, 1),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key


def _preset(name: str) -> DiffusionTransformer:
    root = OmegaConf.create(
        {
            "autoencoder": {"latent_dim": 64},
            "conditioner": {"cond_dim": 768, "global_cond_dim": 1536},
            "dit": OmegaConf.load(CONF / "dit" / f"{name}.yaml"),
        }
    )
    with torch.device("meta"):
        return instantiate(root.dit)


def test_sa2_preset_parameter_count():
    """SA2 DiT: width 1536, 24 layers, 24 heads, ~1.06-1.1B parameters (counted on meta)."""
    model = _preset("sa2")
    n = sum(p.numel() for p in model.parameters())
    assert 0.99 * 1.06e9 <= n <= 1.01 * 1.1e9, n
    assert len(model.transformer.layers) == 24
    assert model.transformer.layers[0].self_attn.num_heads == 24
    assert model.transformer.rotary_pos_emb.dim == 32  # 32 of the 64 head dims
    assert model.gradient_checkpointing


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_smaller_presets_instantiate(name):
    n = sum(p.numel() for p in _preset(name).parameters())
    assert n < 0.3e9


def test_qk_norm_is_a_per_head_layernorm_of_queries_and_keys():
    """``qk_norm="ln"`` (Stable Audio Open Small): LayerNorm(head_dim, eps 1e-6, affine) on each head's
    queries and keys before the rotary embedding, in self- and cross-attention."""
    torch.manual_seed(0)
    attn = _randomise(Attention(64, dim_heads=16, qk_norm="ln")).eval()
    x = torch.randn(2, 7, 64)
    freqs = RotaryEmbedding(8)(7)
    q, k, v = (t.view(2, 7, 4, 16).transpose(1, 2) for t in attn.to_qkv(x).chunk(3, dim=-1))
    norm = torch.nn.functional.layer_norm
    q = apply_rotary(norm(q, (16,), attn.q_norm.weight, attn.q_norm.bias, 1e-6), freqs)
    k = apply_rotary(norm(k, (16,), attn.k_norm.weight, attn.k_norm.bias, 1e-6), freqs)
    by_hand = attn.to_out(torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 7, 64))
    with torch.no_grad():
        torch.testing.assert_close(attn(x, rotary_freqs=freqs), by_hand, rtol=1e-5, atol=1e-6)
        # the norm makes attention blind to the scale of the query/key projections (not of the values)
        before = attn(x, rotary_freqs=freqs)
        attn.to_qkv.weight[:128].mul_(7.0)
        torch.testing.assert_close(attn(x, rotary_freqs=freqs), before, rtol=1e-4, atol=1e-5)
    cross = Attention(64, dim_heads=16, dim_context=32, qk_norm="ln")
    assert cross.q_norm.normalized_shape == cross.k_norm.normalized_shape == (16,)
    with pytest.raises(ValueError, match="qk_norm='l2'"):
        Attention(64, qk_norm="l2")


def test_qk_norm_parameter_layout():
    """SAT's ``Attention(qk_norm="ln")`` names: ``q_norm``/``k_norm`` weight and bias per head dim."""
    sd = _tiny(qk_norm="ln").state_dict()
    for layer in ("transformer.layers.0.self_attn", "transformer.layers.1.cross_attn"):
        for name in ("q_norm.weight", "q_norm.bias", "k_norm.weight", "k_norm.bias"):
            assert tuple(sd[f"{layer}.{name}"].shape) == (32,), f"{layer}.{name}"
    assert not any("q_norm" in key for key in _tiny().state_dict())
