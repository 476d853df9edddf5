"""The inference switch: bit-identical (in-place SnakeBeta and residuals, cached weight norm) or
float32-rounding-equal (layout, polyphase, packed GEMMs, skipped zero cross-attention) outputs,
applied from outside and removed on exit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from musicdiff.models.autoencoder import AudioAutoencoder, OobleckDecoder, OobleckEncoder, SnakeBeta, VAEBottleneck
from musicdiff.models.autoencoder.snake import snake_beta
from musicdiff.models.dit import DiffusionTransformer
from musicdiff.models.dit.rotary import RotaryEmbedding, apply_rotary, rotary_cos_sin
from musicdiff.models.inference import fast_inference
from musicdiff.models.inference.snake import snake_beta_inference, snake_beta_inplace_


def _ae() -> AudioAutoencoder:
    torch.manual_seed(0)
    ae = AudioAutoencoder(OobleckEncoder(2, 4, 16, c_mults=[1, 2], strides=[2, 4]),
                          OobleckDecoder(2, 4, 8, c_mults=[1, 2], strides=[2, 4]), VAEBottleneck(),
                          sample_rate=16000, io_channels=2, latent_dim=8).eval()
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return ae


def _dit(**kw) -> DiffusionTransformer:
    torch.manual_seed(0)
    args = dict(io_channels=8, width=64, depth=2, num_heads=4, cond_token_dim=32, global_cond_dim=16,
                project_cond_tokens=False)
    args.update(kw)
    model = DiffusionTransformer(**args).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _patched(*models: nn.Module) -> list[str]:
    return [f"{type(m).__name__}.{k}" for model in models for m in model.modules() for k in vars(m)
            if k in ("forward", "encode_chunked", "decode_chunked")]


def test_snake_inference_forms_are_bit_identical():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3000, generator=g)
    alpha, beta = torch.rand(1, 5, 1, generator=g) + 0.5, torch.rand(1, 5, 1, generator=g) + 0.5
    ref = snake_beta(x, alpha, beta)
    assert torch.equal(snake_beta_inference(x, alpha, beta), ref)
    assert torch.equal(snake_beta_inplace_(x.clone(), alpha, beta, block_elements=1024), ref)  # several blocks
    act = SnakeBeta(5)
    with torch.no_grad():
        act.alpha.normal_(), act.beta.normal_()
        with fast_inference(act):
            fast = act(x)
    x.requires_grad_(True)
    with fast_inference(act):
        slow = act(x)  # autograd inside the switch: the module's own path, differentiable
    assert torch.equal(fast, slow.detach())
    slow.sum().backward()
    assert x.grad is not None and act.alpha.grad is not None and act.beta.grad is not None


def test_autoencoder_switch_is_exact_and_restored():
    ae = _ae()
    state = {k: v.clone() for k, v in ae.state_dict().items()}
    audio = torch.randn(2, 2, 64)
    with torch.inference_mode():
        z = ae.encode(audio, sample=False)
        y, chunked = ae.decode(z), ae.decode_chunked(z, chunk_size=4, overlap=2)
        with fast_inference(ae) as n:
            assert n > 0 and {"OobleckDecoder.forward", "AudioAutoencoder.decode_chunked"} <= set(_patched(ae))
            torch.testing.assert_close(ae.encode(audio, sample=False), z, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(ae.decode(z), y, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(ae.decode_chunked(z, chunk_size=4, overlap=2), chunked, rtol=1e-5, atol=1e-6)
            with fast_inference(ae) as inner:  # nested: nothing left to switch, the outer forms stay
                assert inner == 0
            assert _patched(ae)
    assert _patched(ae) == []
    assert all(torch.equal(v, state[k]) for k, v in ae.state_dict().items())
    with pytest.raises(RuntimeError, match="boom"), fast_inference(ae):
        raise RuntimeError("boom")
    assert _patched(ae) == []  # restored after an exception
    with fast_inference(ae, enabled=False) as n:
        assert n == 0 and _patched(ae) == []


def test_decoder_block_input_is_consumed_only_inside_the_decoder():
    """The in-place activations are the ones on fresh intermediates: the caller's latents survive."""
    ae = _ae()
    z = torch.randn(1, 8, 6)
    keep = z.clone()
    with torch.inference_mode(), fast_inference(ae):
        ae.decode(z)
        ae.encoder(torch.randn(1, 2, 48))
    assert torch.equal(z, keep)


@pytest.mark.parametrize("zero_rows", [[], [1], [0, 2], [0, 1, 2]])
@pytest.mark.parametrize("masked", [False, True])
def test_dit_switch_matches_plain_model(zero_rows, masked):
    model = _dit(use_cross_attn_mask=masked)
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 8, 12, generator=g), torch.rand(3, generator=g)
    ctx, glob = torch.randn(3, 6, 32, generator=g), torch.randn(3, 16, generator=g)
    ctx[zero_rows] = 0
    mask = torch.rand(3, 6, generator=g) > 0.3 if masked else None
    with torch.enable_grad():
        reference = model(x, t, ctx, mask, glob)
    with fast_inference(model):
        with torch.enable_grad():  # autograd inside the switch: the plain path
            grad_path = model(x, t, ctx, mask, glob)
        with torch.no_grad():
            fast = model(x, t, ctx, mask, glob)
        with torch.inference_mode():
            fast_im = model(x, t, ctx, mask, glob)
    assert torch.equal(grad_path, reference) and grad_path.requires_grad
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast_im, reference, rtol=1e-5, atol=1e-6)
    assert _patched(model) == []


@pytest.mark.parametrize("zero_rows", [[], [1], [0, 2]])
def test_dit_switch_with_qk_norm_matches_plain_model(zero_rows):
    """QK-norm (Stable Audio Open Small): a zero-token row's keys become the norm's bias, but its values
    stay zero, so skipping its cross-attention is still exact; other rows differ by rounding only."""
    model = _dit(qk_norm="ln")
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 8, 12, generator=g), torch.rand(3, generator=g)
    ctx, glob = torch.randn(3, 6, 32, generator=g), torch.randn(3, 16, generator=g)
    ctx[zero_rows] = 0
    with torch.no_grad():
        reference = model(x, t, ctx, None, glob)
        with fast_inference(model):
            fast = model(x, t, ctx, None, glob)
    scale = float(reference.abs().max())  # atol relative to the output's scale (values cross zero)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6 * scale)


def test_zero_context_rows_get_no_cross_attention(monkeypatch):
    """Under the switch a zero-token row runs no cross-attention, and equals the same row run
    without any cross-attention layer update."""
    model = _dit()
    g = torch.Generator().manual_seed(2)
    x, t, glob = torch.randn(2, 8, 10, generator=g), torch.rand(2, generator=g), torch.randn(2, 16, generator=g)
    ctx = torch.randn(2, 6, 32, generator=g)
    ctx[1] = 0
    batches = []
    attn = model.transformer.layers[0].cross_attn
    real = type(attn).forward

    def counting(self, q, *args, **kwargs):
        if self.is_cross:
            batches.append(q.shape[0])
        return real(self, q, *args, **kwargs)

    monkeypatch.setattr(type(attn), "forward", counting)
    with torch.no_grad():
        model(x, t, ctx, None, glob)
        assert batches == [2, 2]  # the plain model: every row, every layer
        with fast_inference(model):
            out = model(x, t, ctx, None, glob)
        assert batches == [2, 2, 1, 1]
        for layer in model.transformer.layers:
            layer.cross_attend = False
        no_cross = model(x[1:], t[1:], ctx[1:], None, glob[1:])
    torch.testing.assert_close(out[1:], no_cross, rtol=1e-5, atol=1e-5)  # batch 2 vs 1: rounding only


def test_precomputed_rotary_is_identical():
    freqs = RotaryEmbedding(8)(7)
    q = torch.randn(2, 3, 7, 16)
    assert torch.equal(apply_rotary(q, freqs), apply_rotary(q, rotary_cos_sin(freqs)))
