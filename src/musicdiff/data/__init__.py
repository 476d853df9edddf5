"""Data: the dataset protocol (base.py), audio I/O and resampling, audio-folder and latent-shard datasets,
SA2 prompts, synthetic music, collation and pre-encoding (see docs/ARCHITECTURE.md)."""

from musicdiff.data.audio_dataset import AudioFolderDataset
from musicdiff.data.audio_io import AudioLoadError, audio_info, is_silent, load_audio
from musicdiff.data.base import AudioSource, FileDataset, SourceFile, item_fields
from musicdiff.data.collate import collate
from musicdiff.data.latent_dataset import LatentShardDataset
from musicdiff.data.latent_writer import encode_dataset
from musicdiff.data.manifest import read_manifest
from musicdiff.data.prompts import PromptBuilder
from musicdiff.data.synthetic import SyntheticDataset, generate_synthetic_dataset

__all__ = [
    "AudioFolderDataset", "AudioLoadError", "AudioSource", "FileDataset", "LatentShardDataset", "PromptBuilder",
    "SourceFile", "SyntheticDataset", "audio_info", "collate", "encode_dataset", "generate_synthetic_dataset",
    "is_silent", "item_fields", "load_audio", "read_manifest",
]
