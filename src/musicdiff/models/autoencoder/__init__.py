"""The SA2 "Oobleck" VAE: encoder, decoder, VAE bottleneck and the chunked AudioAutoencoder."""

from musicdiff.models.autoencoder.autoencoder import AudioAutoencoder
from musicdiff.models.autoencoder.bottleneck import VAEBottleneck
from musicdiff.models.autoencoder.chunking import chunk_spans, decode_chunked, encode_chunked, receptive_field
from musicdiff.models.autoencoder.oobleck import OobleckDecoder, OobleckEncoder
from musicdiff.models.autoencoder.snake import SnakeBeta

__all__ = [
    "AudioAutoencoder",
    "OobleckEncoder",
    "OobleckDecoder",
    "VAEBottleneck",
    "SnakeBeta",
    "chunk_spans",
    "decode_chunked",
    "encode_chunked",
    "receptive_field",
]
