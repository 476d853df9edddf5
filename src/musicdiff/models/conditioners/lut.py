"""Word-level lookup-table text conditioner for the tiny synthetic demo.

A learned embedding per word, in the spirit of stable-audio-tools' ``TokenizerLUTConditioner``
but with no tokenizer files: words (lower-cased runs of letters/digits) are hashed with CRC32
into a fixed vocabulary, so any prompt works with nothing to download and the mapping is the
same on every machine and Python process. Index 0 is padding; padded positions are zeroed.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import torch
from torch import nn

from musicdiff.models.conditioners.base import Conditioner

_WORD = re.compile(r"[a-z0-9]+")


def hash_words(text: str, vocab_size: int, max_tokens: int) -> list[int]:
    """Token ids in ``[1, vocab_size)`` for the first ``max_tokens`` words of ``text``."""
    words = _WORD.findall(text.lower())[:max_tokens]
    return [1 + zlib.crc32(w.encode("utf-8")) % (vocab_size - 1) for w in words]


class LUTConditioner(Conditioner):
    """Prompt -> ``[B, max_tokens, output_dim]`` learned word embeddings + mask.

    Args:
        output_dim: token width (``cond_dim``).
        vocab_size: hash buckets including the padding id 0.
        max_tokens: words kept per prompt (the rest are truncated).
        use_pos_emb: add a learned absolute position embedding (word order matters).
    """

    def __init__(
        self, output_dim: int, vocab_size: int = 1024, max_tokens: int = 16, use_pos_emb: bool = True
    ) -> None:
        super().__init__(output_dim, output_dim)
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be at least 2, got {vocab_size}")
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.vocab_size = vocab_size
        self.max_tokens = max_tokens
        self.token_embedder = nn.Embedding(vocab_size, output_dim, padding_idx=0)
        self.pos_emb = nn.Embedding(max_tokens, output_dim) if use_pos_emb else None
        if self.pos_emb is not None:
            nn.init.normal_(self.pos_emb.weight, std=0.02)

    def forward(
        self, values: Sequence[str], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed prompts; tokens ``[B, max_tokens, output_dim]`` and mask ``[B, max_tokens]``."""
        ids = torch.zeros(len(values), self.max_tokens, dtype=torch.long)
        for i, text in enumerate(values):
            if not isinstance(text, str):
                raise ValueError(f"LUTConditioner needs prompt strings, got {type(text).__name__}")
            row = hash_words(text, self.vocab_size, self.max_tokens)
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        ids = ids.to(device)
        mask = ids != 0
        emb = self.token_embedder(ids)
        if self.pos_emb is not None:
            # called as a module (not .weight) so DeepSpeed ZeRO-3 gathers the partitioned table
            emb = emb + self.pos_emb(torch.arange(self.max_tokens, device=ids.device))[None]
        return emb * mask[..., None].to(emb.dtype), mask
