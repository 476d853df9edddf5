"""Evaluation metrics (SA2 Table 2): Fréchet distance, KL divergence, CLAP score, and embedders
(musicnn with its released weights, CLAP from a local checkpoint, weight-free proxies).

The reconstruction metrics live in ``musicdiff.evaluation.reconstruction`` and are not imported
here, so importing this package stays light.
"""

from musicdiff.evaluation.clap_score import CLAPScore
from musicdiff.evaluation.embedders import AudioSet, ClapEmbedder, Embedder, MelStatsEmbedder, RandomConvEmbedder
from musicdiff.evaluation.folder_eval import MetricSuite, evaluate_folders, read_prompts
from musicdiff.evaluation.frechet import FrechetDistance, frechet_distance, gaussian_stats
from musicdiff.evaluation.kl import KLDivergence, PooledKLDivergence, kl_divergence
from musicdiff.evaluation.longform import LongformMetrics
from musicdiff.evaluation.musicnn import MusicnnEmbedder
from musicdiff.evaluation.openl3 import OpenL3Embedder
from musicdiff.evaluation.passt import PasstClassifier

__all__ = [
    "AudioSet", "CLAPScore", "ClapEmbedder", "Embedder", "FrechetDistance", "KLDivergence", "LongformMetrics",
    "MelStatsEmbedder", "MetricSuite", "MusicnnEmbedder", "OpenL3Embedder", "PasstClassifier",
    "PooledKLDivergence", "RandomConvEmbedder",
    "evaluate_folders", "frechet_distance", "gaussian_stats", "kl_divergence", "read_prompts",
]
