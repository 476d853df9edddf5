"""AudioAutoencoder: encoder + VAE bottleneck + decoder (SA2 §3.1), with chunked long-audio paths.

``encode`` pads the audio on the right to a multiple of ``downsampling_ratio``, so
``L = ceil(T / downsampling_ratio)``; ``decode`` returns ``L · downsampling_ratio`` samples.
The inference fast paths (``musicdiff.models.inference.fast_inference``) are applied from outside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from musicdiff.models.autoencoder.bottleneck import VAEBottleneck
from musicdiff.models.autoencoder.chunking import decode_chunked, encode_chunked


class AudioAutoencoder(nn.Module):
    """The SA2 VAE.

    Args:
        encoder: audio ``[B, io_channels, T]`` → ``[B, 2·latent_dim, T/ratio]`` (e.g. ``OobleckEncoder``).
        decoder: ``[B, latent_dim, L]`` → ``[B, io_channels, L·ratio]`` (e.g. ``OobleckDecoder``).
        bottleneck: ``VAEBottleneck`` (or None for a plain autoencoder).
        sample_rate: audio sample rate in Hz (44100 for SA2).
        io_channels: audio channels (2 for SA2).
        latent_dim: latent channels ``D`` (64 for SA2).
        downsampling_ratio: samples per latent frame; inferred from the encoder when None, checked otherwise.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, bottleneck: VAEBottleneck | None,
                 sample_rate: int, io_channels: int, latent_dim: int, downsampling_ratio: int | None = None) -> None:
        super().__init__()
        self.encoder, self.decoder, self.bottleneck = encoder, decoder, bottleneck
        self.sample_rate, self.io_channels, self.latent_dim = int(sample_rate), int(io_channels), int(latent_dim)
        inferred = getattr(encoder, "downsampling_ratio", None)
        if downsampling_ratio is None:
            if inferred is None:
                raise ValueError("downsampling_ratio is required when the encoder does not define one")
            downsampling_ratio = inferred
        elif inferred is not None and inferred != downsampling_ratio:
            raise ValueError(f"downsampling_ratio={downsampling_ratio} but the encoder strides give {inferred}")
        self.downsampling_ratio = int(downsampling_ratio)
        self._check_dims()

    def _check_dims(self) -> None:
        factor = 2 if isinstance(self.bottleneck, VAEBottleneck) else 1
        enc_out = getattr(self.encoder, "latent_dim", None)
        if enc_out is not None and enc_out != factor * self.latent_dim:
            raise ValueError(f"encoder.latent_dim={enc_out} must be {factor}×latent_dim={factor * self.latent_dim} "
                             f"({'mean and scale for the VAE' if factor == 2 else 'no bottleneck'})")
        dec_in = getattr(self.decoder, "latent_dim", None)
        if dec_in is not None and dec_in != self.latent_dim:
            raise ValueError(f"decoder.latent_dim={dec_in} must equal latent_dim={self.latent_dim}")
        for name, part, key in (("encoder", self.encoder, "in_channels"), ("decoder", self.decoder, "out_channels")):
            ch = getattr(part, key, None)
            if ch is not None and ch != self.io_channels:
                raise ValueError(f"{name}.{key}={ch} must equal io_channels={self.io_channels}")

    @property
    def latent_rate(self) -> float:
        """Latent frames per second (21.5 Hz for SA2)."""
        return self.sample_rate / self.downsampling_ratio

    def _prepare(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 3 or audio.shape[1] != self.io_channels:
            raise ValueError(f"expected audio [B, {self.io_channels}, T], got {tuple(audio.shape)}")
        pad = -audio.shape[-1] % self.downsampling_ratio
        return F.pad(audio, (0, pad)) if pad else audio

    def _bottleneck(self, h: torch.Tensor, sample: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.bottleneck is None:
            return h, {"kl": h.new_zeros(())}
        return self.bottleneck.encode(h, sample=sample)

    def encode_with_info(self, audio: torch.Tensor, sample: bool = True) -> tuple[torch.Tensor, dict]:
        """Encode ``audio [B, C, T]`` → ``(latents [B, D, L], {"kl", "mean", "scale", "std"})``."""
        h = self.encoder(self._prepare(audio))
        return self._bottleneck(h, sample)

    def encode(self, audio: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """Encode ``audio [B, C, T]`` to latents ``[B, D, ceil(T / ratio)]`` (posterior sample or mean)."""
        return self.encode_with_info(audio, sample)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode ``latents [B, D, L]`` to audio ``[B, C, L · ratio]``."""
        if latents.dim() != 3 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents [B, {self.latent_dim}, L], got {tuple(latents.shape)}")
        if self.bottleneck is not None:
            latents = self.bottleneck.decode(latents)
        return self.decoder(latents)

    def forward(self, audio: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """Reconstruct ``audio``, trimmed to its input length."""
        return self.decode(self.encode(audio, sample))[..., : audio.shape[-1]]

    def encode_chunked(self, audio: torch.Tensor, chunk_size: int = 128, overlap: int = 32, sample: bool = False,
                       out_device: torch.device | str | None = None) -> torch.Tensor:
        """Encode long audio in overlapping windows (see ``chunking.py``); sizes in latent frames.

        The encoder runs per window; the bottleneck is applied once to the assembled sequence.
        ``sample`` defaults to False (posterior mean), the usual choice for pre-encoding datasets.
        """
        h = encode_chunked(self.encoder, self._prepare(audio), self.downsampling_ratio, chunk_size, overlap,
                           out_device)
        return self._bottleneck(h, sample)[0]

    def decode_chunked(self, latents: torch.Tensor, chunk_size: int = 128, overlap: int = 32,
                       out_device: torch.device | str | None = None) -> torch.Tensor:
        """Decode long latents in overlapping windows with cropped receptive fields (see ``chunking.py``)."""
        if latents.dim() != 3 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"expected latents [B, {self.latent_dim}, L], got {tuple(latents.shape)}")
        return decode_chunked(self.decode, latents, self.downsampling_ratio, chunk_size, overlap, out_device)
