"""Classifier-free guidance wrapper with a linear fake denoiser."""

from __future__ import annotations

import pytest
import torch

from musicdiff.sampling.guidance import CFGDenoiser, batch_conditions


class LinearDenoiser:
    """x0_hat = 0.5 x + mean of unmasked tokens + global cond, broadcast over time; counts calls."""

    def __init__(self):
        self.batch_sizes = []

    def __call__(self, x, sigma, cross_attn_cond=None, cross_attn_mask=None, global_cond=None):
        self.batch_sizes.append(x.shape[0])
        out = 0.5 * x + 0.01 * sigma.reshape(-1, 1, 1)
        if cross_attn_cond is not None:
            m = cross_attn_mask.float()[..., None]
            out = out + ((cross_attn_cond * m).sum(1) / m.sum(1).clamp(min=1))[..., None]
        if global_cond is not None:
            out = out + global_cond[..., None]
        return out


def _conds(b=3, n=4, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    cond = {
        "cross_attn_cond": torch.randn(b, n, d, generator=g),
        "cross_attn_mask": torch.ones(b, n, dtype=torch.bool),
        "global_cond": torch.randn(b, d, generator=g),
    }
    uncond = dict(cond, cross_attn_cond=torch.zeros(b, n, d))
    return cond, uncond


def test_cfg_formula_and_single_batched_forward():
    den = LinearDenoiser()
    cond, uncond = _conds()
    x, sigma = torch.randn(3, 2, 5), torch.full((3,), 2.0)
    out = CFGDenoiser(den, scale=4.0)(x, sigma, cond=cond, uncond=uncond)
    assert den.batch_sizes == [6]  # one forward, cond and uncond batched
    c, u = den(x, sigma, **cond), den(x, sigma, **uncond)
    torch.testing.assert_close(out, u + 4.0 * (c - u))


def test_scale_one_or_no_uncond_is_conditional_only():
    den = LinearDenoiser()
    cond, uncond = _conds()
    x, sigma = torch.randn(3, 2, 5), torch.ones(3)
    expected = den(x, sigma, **cond)
    den.batch_sizes.clear()
    torch.testing.assert_close(CFGDenoiser(den, scale=1.0)(x, sigma, cond=cond, uncond=uncond), expected)
    torch.testing.assert_close(CFGDenoiser(den, scale=5.0)(x, sigma, cond=cond), expected)
    assert den.batch_sizes == [3, 3]


def test_interval_limits_guidance():
    den = LinearDenoiser()
    cond, uncond = _conds()
    x = torch.randn(3, 2, 5)
    cfg = CFGDenoiser(den, scale=3.0, interval=(1.0, 10.0))
    outside = torch.full((3,), 20.0)
    torch.testing.assert_close(cfg(x, outside, cond=cond, uncond=uncond), den(x, outside, **cond))
    mixed = torch.tensor([0.5, 5.0, 20.0])
    out = cfg(x, mixed, cond=cond, uncond=uncond)
    c, u = den(x, mixed, **cond), den(x, mixed, **uncond)
    torch.testing.assert_close(out[1], (u + 3.0 * (c - u))[1])
    torch.testing.assert_close(out[[0, 2]], c[[0, 2]])


def test_rescale_matches_conditional_std():
    den = LinearDenoiser()
    cond, uncond = _conds()
    x, sigma = torch.randn(3, 2, 5), torch.ones(3)
    c = den(x, sigma, **cond)
    full = CFGDenoiser(den, scale=7.0, rescale=1.0)(x, sigma, cond=cond, uncond=uncond)
    torch.testing.assert_close(full.std(dim=(1, 2)), c.std(dim=(1, 2)))
    plain = CFGDenoiser(den, scale=7.0)(x, sigma, cond=cond, uncond=uncond)
    half = CFGDenoiser(den, scale=7.0, rescale=0.5)(x, sigma, cond=cond, uncond=uncond)
    torch.testing.assert_close(half, 0.5 * full + 0.5 * plain)


def test_negative_prompt_with_other_token_count_is_padded():
    den = LinearDenoiser()
    cond, _ = _conds(n=4)
    neg = {
        "cross_attn_cond": torch.randn(3, 6, 2),
        "cross_attn_mask": torch.tensor([[True] * 3 + [False] * 3] * 3),
        "global_cond": cond["global_cond"],
    }
    batched = batch_conditions(cond, neg)
    assert batched["cross_attn_cond"].shape == (6, 6, 2) and batched["cross_attn_mask"].shape == (6, 6)
    assert not batched["cross_attn_mask"][:3, 4:].any()
    x, sigma = torch.randn(3, 2, 5), torch.ones(3)
    out = CFGDenoiser(den, scale=2.0)(x, sigma, cond=cond, uncond=neg)
    c, u = den(x, sigma, **cond), den(x, sigma, **neg)
    torch.testing.assert_close(out, u + 2.0 * (c - u))


def test_none_values_and_errors():
    den = LinearDenoiser()
    cond, uncond = _conds()
    cond["global_cond"] = uncond["global_cond"] = None
    out = CFGDenoiser(den, scale=2.0)(torch.randn(3, 2, 5), torch.ones(3), cond=cond, uncond=uncond)
    assert out.shape == (3, 2, 5)
    with pytest.raises(ValueError, match="same keys"):
        batch_conditions({"a": torch.zeros(1)}, {"b": torch.zeros(1)})
    with pytest.raises(ValueError, match="only one"):
        batch_conditions({"a": torch.zeros(1, 2)}, {"a": None})
    with pytest.raises(ValueError, match="rescale"):
        CFGDenoiser(den, rescale=2.0)
    with pytest.raises(ValueError, match="interval"):
        CFGDenoiser(den, interval=(5.0, 1.0))
