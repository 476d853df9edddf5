"""Pasting the original audio back into the kept regions of an inpainting result, with a crossfade."""

from __future__ import annotations

import math

import pytest
import torch

from musicdiff.sampling import Generator, InpaintRequest, SamplerSpec, samplers
from musicdiff.sampling.inpaint import crossfade_weights, paste_known
from tests.sampling.stubs import ShuffleAutoencoder, StubConditioner, StubDiT, StubVDenoiser


def test_crossfade_weights_linear_and_equal_power():
    keep = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1], dtype=torch.bool)
    orig, gen = crossfade_weights(keep, 12, fade=2)
    expected = torch.tensor([1, 1, 1, 2 / 3, 1 / 3, 0, 0, 0, 1 / 3, 2 / 3, 1, 1])
    torch.testing.assert_close(orig, expected)
    torch.testing.assert_close(orig + gen, torch.ones(12))
    orig_p, gen_p = crossfade_weights(keep, 12, fade=2, shape="equal_power")
    torch.testing.assert_close(orig_p**2 + gen_p**2, torch.ones(12))
    assert orig_p[3] == pytest.approx(math.cos(math.pi / 6)) and orig_p[5:8].eq(0).all() and gen_p[5:8].eq(1).all()
    # beyond the original audio: generated, with no original to fade from; a shorter output crops
    orig_long, gen_long = crossfade_weights(keep, 15, fade=1)
    assert orig_long[:12].tolist() == crossfade_weights(keep, 12, fade=1)[0].tolist()
    assert orig_long[12:].eq(0).all() and gen_long[12:].eq(1).all()
    assert crossfade_weights(keep, 5, fade=0)[0].tolist() == [1, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="crossfade shape"):
        crossfade_weights(keep, 12, 2, shape="cosine")


def test_paste_known_is_exact_on_kept_samples_and_continuous():
    sr = 1000
    t = torch.arange(400) / sr
    known = torch.stack([torch.sin(2 * math.pi * 5 * t), torch.cos(2 * math.pi * 5 * t)])
    generated = 0.9 * known + 0.05  # a lossy reconstruction
    keep = torch.ones(400, dtype=torch.bool)
    keep[100:300] = False
    out = paste_known(generated, known, keep, sr, crossfade_seconds=0.02)
    assert torch.equal(out[:, keep], known[:, keep])  # bit-exact
    torch.testing.assert_close(out[:, 121:279], generated[:, 121:279], rtol=0, atol=0)
    ramp = out[:, 100:121] - generated[:, 100:121]  # moves from the original to the generated audio
    assert ramp.abs()[:, 0].gt(ramp.abs()[:, -1]).all()
    jump = (out[:, 1:] - out[:, :-1]).abs().max()
    hard = paste_known(generated, known, keep, sr, crossfade_seconds=0.0)
    assert torch.equal(hard[:, ~keep], generated[:, ~keep]) and torch.equal(hard[:, keep], known[:, keep])
    assert jump < (hard[:, 1:] - hard[:, :-1]).abs().max()  # the crossfade removes the step at the seams


def test_request_validation():
    audio = torch.zeros(2, 100)
    with pytest.raises(ValueError, match="keeps no sample"):
        InpaintRequest(audio, torch.zeros(100, dtype=torch.bool))
    with pytest.raises(ValueError, match="crossfade_seconds"):
        InpaintRequest.span(audio, 0.01, 0.02, 1000, crossfade_seconds=-0.01)
    with pytest.raises(ValueError, match="crossfade_shape"):
        InpaintRequest.continuation(audio, 0.05, 1000, crossfade_shape="cubic")
    req = InpaintRequest.continuation(audio, 0.05, 1000, crossfade_seconds=0.0, crossfade_shape="equal_power")
    assert req.crossfade_seconds == 0.0 and req.crossfade_shape == "equal_power"


class LossyAutoencoder(ShuffleAutoencoder):
    """The shuffle autoencoder with a lossy decoder (gain and offset), like a real VAE."""

    def decode(self, latents):
        return 0.8 * super().decode(latents) + 0.05


def test_generator_pastes_the_original_through_a_lossy_autoencoder():
    ae = LossyAutoencoder(sample_rate=1000, io_channels=2, ratio=4)
    spec = SamplerSpec(samplers.sample_dpmpp_2m, steps=6, sigma_min=0.02, sigma_max=30.0, cfg_scale=3.0)
    gen = Generator(ae, StubDiT(ae.latent_dim), StubConditioner(), spec, window_latents=64,
                    decode_chunk_latents=None, denoiser_wrapper=StubVDenoiser)
    t = torch.arange(256) / 1000
    known = torch.stack([torch.sin(2 * math.pi * 7 * t), 0.5 * torch.sin(2 * math.pi * 7 * t)])
    req = InpaintRequest.span(known, 0.1, 0.2, sample_rate=1000, crossfade_seconds=0.01)
    out = gen.generate(["a b"], seeds=1, inpaint=req)[0]
    assert torch.equal(out[:, req.keep], known[:, req.keep])
    gap = out[:, 110:190]  # beyond the 10 ms crossfades: the lossy decoder's output
    assert (gap - known[:, 110:190]).abs().mean() > 0.05
    latents = gen.generate(["a b"], seeds=1, inpaint=req, return_latents=True)[0]
    torch.testing.assert_close(gap, ae.decode(latents[None])[0, :, 110:190])
    # the latent path alone (no paste) keeps the lossy reconstruction in the kept regions
    assert (ae.decode(latents[None])[0][:, req.keep] - known[:, req.keep]).abs().max() > 0.04
