"""Memorization analysis (SA2 §4.5): training-set embedding, NN search, repeats, HTML report."""

from musicdiff.memorization.analysis import (
    IN_DISTRIBUTION, OUT_OF_DISTRIBUTION, AudioItem, Match, MemorizationResult, embed_items, embed_readable_items,
    generate_items, in_distribution_prompts, rank_generations, run_memorization_analysis,
)
from musicdiff.memorization.index import CosineIndex
from musicdiff.memorization.repeats import RepeatGroups, UnionFind, find_repeats
from musicdiff.memorization.report import write_report

__all__ = [
    "IN_DISTRIBUTION", "OUT_OF_DISTRIBUTION", "AudioItem", "CosineIndex", "Match", "MemorizationResult",
    "RepeatGroups", "UnionFind", "embed_items", "embed_readable_items", "find_repeats", "generate_items",
    "in_distribution_prompts", "rank_generations", "run_memorization_analysis", "write_report",
]
