"""Chunked encode/decode: windows, exactness against the unchunked path, bounded chunk sizes."""

from __future__ import annotations

import pytest
import torch

from musicdiff.models.autoencoder import chunk_spans, receptive_field


@pytest.mark.parametrize("total, chunk, overlap", [(100, 32, 8), (97, 32, 16), (33, 32, 8), (20, 32, 8), (64, 16, 0)])
def test_spans_cover_every_frame(total, chunk, overlap):
    covered = torch.zeros(total, dtype=torch.int32)
    for start, a, b in chunk_spans(total, chunk, overlap):
        assert start <= a < b <= start + min(chunk, total) and start + min(chunk, total) <= total
        covered[a:b] += 1
    assert bool((covered >= 1).all())


def test_bad_chunk_arguments():
    with pytest.raises(ValueError, match="chunk_size > overlap"):
        chunk_spans(10, 8, 8)


def test_decoder_receptive_field_is_finite(tiny_autoencoder):
    ae = tiny_autoencoder
    with torch.no_grad():
        r = receptive_field(ae.decode, (1, 16, 64), 1, ae.downsampling_ratio)
    assert 0 < r < 16  # so overlap 32 (16 cropped per side) is exact


def test_chunked_decode_matches_unchunked(tiny_autoencoder):
    ae = tiny_autoencoder
    z = torch.randn(2, 16, 300)
    with torch.no_grad():
        full = ae.decode(z)
        chunked = ae.decode_chunked(z, chunk_size=64, overlap=32)
    assert chunked.shape == full.shape
    assert torch.allclose(chunked, full, atol=1e-4, rtol=1e-4), (chunked - full).abs().max()


def test_chunked_encode_matches_unchunked(tiny_autoencoder):
    ae = tiny_autoencoder
    audio = torch.randn(1, 2, 300 * 64 - 10)  # not a multiple of the ratio: padded like encode()
    with torch.no_grad():
        full = ae.encode(audio, sample=False)
        chunked = ae.encode_chunked(audio, chunk_size=64, overlap=32)
    assert chunked.shape == full.shape == (1, 16, 300)
    assert torch.allclose(chunked, full, atol=1e-4, rtol=1e-4), (chunked - full).abs().max()


def test_long_decode_sees_only_bounded_chunks(tiny_autoencoder):
    """Bounded memory: the decoder never receives more than chunk_size frames, whatever the length."""
    ae = tiny_autoencoder
    seen = []
    hook = ae.decoder.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-1]))
    z = torch.randn(1, 16, 1000)  # 4 s at 250 Hz, 9 windows
    with torch.no_grad():
        audio = ae.decode_chunked(z, chunk_size=128, overlap=32, out_device="cpu")
    hook.remove()
    assert audio.shape == (1, 2, 1000 * 64) and torch.isfinite(audio).all()
    assert max(seen) == 128 and len(seen) == len(chunk_spans(1000, 128, 32))
