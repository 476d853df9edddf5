"""The DiT's autograd-free fast paths give the training path's numbers.

Without autograd the DiT adds residuals in place, shares one rotary ``(cos, sin)`` between all
layers and skips the cross-attention of batch rows whose tokens are all zero (classifier-free
guidance's unconditional half), whose branch is exactly zero.
"""

from __future__ import annotations

import pytest
import torch

from musicdiff.models.dit import DiffusionTransformer
from musicdiff.models.dit.rotary import RotaryEmbedding, apply_rotary, rotary_cos_sin


def _model(**kw) -> DiffusionTransformer:
    torch.manual_seed(0)
    args = dict(io_channels=8, width=64, depth=2, num_heads=4, cond_token_dim=32, global_cond_dim=16,
                project_cond_tokens=False)
    args.update(kw)
    model = DiffusionTransformer(**args).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("zero_rows", [[], [1], [0, 2], [0, 1, 2]])
@pytest.mark.parametrize("masked", [False, True])
def test_inference_matches_autograd_path(zero_rows, masked):
    model = _model(use_cross_attn_mask=masked)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 8, 12, generator=g), torch.rand(3, generator=g)
    ctx, glob = torch.randn(3, 6, 32, generator=g), torch.randn(3, 16, generator=g)
    ctx[zero_rows] = 0
    mask = torch.rand(3, 6, generator=g) > 0.3 if masked else None
    with torch.enable_grad():
        reference = model(x, t, ctx, mask, glob)
    with torch.no_grad():
        fast = model(x, t, ctx, mask, glob)
    with torch.inference_mode():
        fast_im = model(x, t, ctx, mask, glob)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_im, reference, rtol=1e-5, atol=1e-6)


def test_zero_context_rows_get_no_cross_attention():
    """A zero-token row equals the same row run without any cross-attention layer update."""
    model = _model()
    g = torch.Generator().manual_seed(2)
    x, t, glob = torch.randn(2, 8, 10, generator=g), torch.rand(2, generator=g), torch.randn(2, 16, generator=g)
    ctx = torch.randn(2, 6, 32, generator=g)
    ctx[1] = 0
    with torch.no_grad():
        out = model(x, t, ctx, None, glob)
        for layer in model.transformer.layers:
            layer.cross_attend = False
        no_cross = model(x[1:], t[1:], ctx[1:], None, glob[1:])
    torch.testing.assert_close(out[1:], no_cross, rtol=1e-5, atol=1e-5)  # batch 2 vs 1: rounding only


def test_precomputed_rotary_is_identical():
    freqs = RotaryEmbedding(8)(7)
    q = torch.randn(2, 3, 7, 16)
    assert torch.equal(apply_rotary(q, freqs), apply_rotary(q, rotary_cos_sin(freqs)))
