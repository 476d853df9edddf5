"""The decoder's nearest-neighbour upsampling option (stable-audio-tools ``use_nearest_upsample``)."""

from __future__ import annotations

import torch

from musicdiff.models.autoencoder import OobleckDecoder


def test_nearest_upsample_decoder_shapes_and_layout():
    torch.manual_seed(0)
    dec = OobleckDecoder(out_channels=2, channels=4, latent_dim=3, c_mults=[1, 2], strides=[2, 4],
                         use_nearest_upsample=True)
    z = torch.randn(2, 3, 5)
    assert dec(z).shape == (2, 2, 5 * 8)
    # layout of stable-audio-tools: Upsample (no weights) then a bias-free stride-1 conv of kernel 2·stride
    keys = [k for k in dec.state_dict() if k.startswith("layers.1.layers.1.")]
    assert keys and all(".1.1." not in k or "bias" not in k for k in keys)
    conv = dec.layers[1].layers[1][1]
    assert conv.stride == (1,) and conv.kernel_size == (8,) and conv.bias is None


def test_nearest_upsample_has_no_checkerboard_at_init():
    """A constant latent decodes to a signal without the latent-rate periodicity of a transposed conv."""
    torch.manual_seed(0)
    z = torch.ones(1, 3, 48)
    periodic = {}
    for nearest in (False, True):
        torch.manual_seed(0)
        dec = OobleckDecoder(out_channels=1, channels=4, latent_dim=3, c_mults=[1], strides=[8], use_snake=False,
                             use_nearest_upsample=nearest)
        y = dec(z)[0, 0, 128:-128].detach()  # beyond the receptive field of the edges
        frames = y.reshape(-1, 8)  # one row per latent frame: a frame-rate tone is a non-flat mean row
        periodic[nearest] = float(frames.mean(0).std() / (y.abs().mean() + 1e-12))
    assert periodic[True] < 1e-4 and periodic[False] > 100 * periodic[True], periodic
