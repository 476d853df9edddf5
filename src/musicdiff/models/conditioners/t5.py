"""Frozen T5 text encoder conditioner (Stable Audio Open style).

Evans et al., "Stable Audio Open" (arXiv 2407.14358) §2: prompts are encoded by a frozen T5-base
encoder (Raffel et al., arXiv 1910.10683), up to 128 tokens; the last hidden states are the
cross-attention tokens and positions past the prompt are zeroed. The encoder is loaded only
from a local directory or the local Hugging Face cache (``local_files_only=True``).

The frozen encoder is kept out of the module tree (as stable-audio-tools does) so it is neither
optimised nor written into exported checkpoints; only ``proj_out`` (if any) is a parameter.
"""

from __future__ import annotations

from typing import Sequence

import torch

from musicdiff.models.conditioners.base import Conditioner, load_local_pretrained, resolve_trainable

T5_ENV_VAR = "MUSICDIFF_T5_PATH"


class T5Conditioner(Conditioner):
    """Prompt -> T5 encoder hidden states ``[B, max_length, output_dim]`` + padding mask.

    Args:
        output_dim: token width (``cond_dim``; 768 for t5-base needs no projection).
        model_name: local path or cached hub id of a T5 (encoder) model.
        max_length: tokens per prompt, padded/truncated (128 in SAO).
        project_out: add a linear projection even when widths match.
        trainable: train the encoder (registers it as a submodule); False = frozen.
        enable_grad: deprecated name of ``trainable``.
    """

    def __init__(
        self,
        output_dim: int,
        model_name: str = "google-t5/t5-base",
        max_length: int = 128,
        project_out: bool = False,
        trainable: bool = False,
        enable_grad: bool | None = None,
    ) -> None:
        from transformers import AutoTokenizer, T5EncoderModel

        tokenizer = load_local_pretrained(AutoTokenizer, model_name, T5_ENV_VAR, "T5 model")
        model = load_local_pretrained(T5EncoderModel, model_name, T5_ENV_VAR, "T5 model")
        super().__init__(model.config.d_model, output_dim, project_out=project_out)
        if max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        self.model_name = model_name
        self.max_length = max_length
        self.tokenizer = tokenizer
        trainable = resolve_trainable(type(self).__name__, trainable, enable_grad=enable_grad)
        self.trainable = trainable
        model.train(trainable).requires_grad_(trainable)
        if trainable:
            self.model = model
        else:
            self.__dict__["model"] = model  # hidden from parameters(), state_dict() and .to()

    def forward(
        self, values: Sequence[str], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts; returns tokens ``[B, max_length, output_dim]`` and mask ``[B, max_length]``."""
        texts = [str(v) for v in values]
        enc = self.tokenizer(
            texts,
            truncation=True,
            max_length=self.max_length,
            padding="max_length",
            return_tensors="pt",
        )
        input_ids = enc["input_ids"].to(device)
        mask = enc["attention_mask"].to(device).bool()
        if not self.trainable:
            self.model.to(device).eval()
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if not isinstance(self.proj_out, torch.nn.Identity):
            hidden = hidden.to(self.proj_out.weight.dtype)
        emb = self.proj_out(hidden) * mask[..., None].to(hidden.dtype)
        return emb, mask
