"""The Oobleck VAE's autograd-free fast paths (in-place SnakeBeta and residuals, cached weight-norm
weights) give bit-identical results to the autograd path; the channels-last layout of long layers
(``layout.py``) and the decoder's polyphase upsampling (``test_polyphase.py``) the same values
summed in another order."""

from __future__ import annotations

import torch

from musicdiff.models.autoencoder import AudioAutoencoder, OobleckDecoder, OobleckEncoder, SnakeBeta, VAEBottleneck
from musicdiff.models.autoencoder.snake import snake_beta, snake_beta_inference


def test_snake_inference_is_bit_identical():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 300, generator=g)
    alpha, beta = torch.rand(1, 5, 1, generator=g) + 0.5, torch.rand(1, 5, 1, generator=g) + 0.5
    assert torch.equal(snake_beta_inference(x, alpha, beta), snake_beta(x, alpha, beta))
    act = SnakeBeta(5)
    with torch.no_grad():
        act.alpha.normal_(), act.beta.normal_()
        fast = act(x)
    x.requires_grad_(True)
    slow = act(x)
    assert torch.equal(fast, slow.detach())
    slow.sum().backward()  # the autograd path still differentiates through x and the parameters
    assert x.grad is not None and act.alpha.grad is not None and act.beta.grad is not None


def test_autoencoder_inference_is_bit_identical():
    torch.manual_seed(0)
    ae = AudioAutoencoder(OobleckEncoder(2, 4, 16, c_mults=[1, 2], strides=[2, 4]),
                          OobleckDecoder(2, 4, 8, c_mults=[1, 2], strides=[2, 4]), VAEBottleneck(),
                          sample_rate=16000, io_channels=2, latent_dim=8).eval()
    with torch.no_grad():
        for p in ae.parameters():
            p.add_(0.1 * torch.randn_like(p))
    audio = torch.randn(2, 2, 64)
    z_grad = ae.encode(audio, sample=False)
    z = z_grad.detach()
    y_grad, chunked_grad = ae.decode(z), ae.decode_chunked(z, chunk_size=4, overlap=2)
    assert y_grad.requires_grad
    with torch.inference_mode():
        torch.testing.assert_close(ae.encode(audio, sample=False), z, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ae.decode(z), y_grad.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ae.decode_chunked(z, chunk_size=4, overlap=2), chunked_grad.detach(),
                                   rtol=1e-5, atol=1e-6)
