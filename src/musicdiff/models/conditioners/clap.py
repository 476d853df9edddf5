"""CLAP text-tower conditioner (SA2 style).

Evans et al., "Long-form music generation with latent diffusion" (SA2, arXiv 2404.10301) §3.4:
prompts are encoded by the text branch of a CLAP model (Wu et al., arXiv 2211.06687; a RoBERTa
encoder) and the hidden states of the next-to-last layer are the cross-attention tokens. SA2
trains its own CLAP; here any ``transformers`` CLAP checkpoint (``ClapModel`` directory such as
laion/clap-htsat-unfused, or a bare ``ClapTextModelWithProjection``) can be used, loaded from a
local path or the local HF cache only. With ``use_text_features=False`` the pooled, projected
text embedding is used as a single token instead.
"""

from __future__ import annotations

from typing import Sequence

import torch

from musicdiff.models.conditioners.base import Conditioner, load_local_pretrained, resolve_trainable

CLAP_ENV_VAR = "MUSICDIFF_CLAP_PATH"


class CLAPTextConditioner(Conditioner):
    """Prompt -> CLAP text features ``[B, N, output_dim]`` + padding mask.

    Args:
        output_dim: token width (``cond_dim``).
        model_name: local path or cached hub id of a CLAP (or CLAP text) model.
        max_length: tokens per prompt, padded/truncated (77 as LAION-CLAP).
        use_text_features: per-token hidden states (True, SA2) or the pooled projection (False).
        feature_layer_ix: which hidden state to use (-2 = next-to-last layer, SA2).
        project_out: add a linear projection even when widths match.
        trainable: train the encoder (registers it as a submodule); False = frozen.
        finetune: deprecated name of ``trainable``.
    """

    def __init__(
        self,
        output_dim: int,
        model_name: str = "laion/clap-htsat-unfused",
        max_length: int = 77,
        use_text_features: bool = True,
        feature_layer_ix: int = -2,
        project_out: bool = False,
        trainable: bool = False,
        finetune: bool | None = None,
    ) -> None:
        from transformers import AutoTokenizer, ClapTextModelWithProjection

        tokenizer = load_local_pretrained(AutoTokenizer, model_name, CLAP_ENV_VAR, "CLAP model")
        model = load_local_pretrained(
            ClapTextModelWithProjection, model_name, CLAP_ENV_VAR, "CLAP model"
        )
        dim = model.config.hidden_size if use_text_features else model.config.projection_dim
        super().__init__(dim, output_dim, project_out=project_out)
        self.model_name = model_name
        self.max_length = max_length
        self.use_text_features = use_text_features
        self.feature_layer_ix = feature_layer_ix
        self.tokenizer = tokenizer
        trainable = resolve_trainable(type(self).__name__, trainable, finetune=finetune)
        self.trainable = trainable
        model.train(trainable).requires_grad_(trainable)
        if trainable:
            self.model = model
        else:
            self.__dict__["model"] = model  # hidden from parameters(), state_dict() and .to()

    def forward(
        self, values: Sequence[str], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts; tokens ``[B, N, output_dim]`` (N = max_length or 1) and mask ``[B, N]``."""
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
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask.long(),
                output_hidden_states=self.use_text_features,
            )
        if self.use_text_features:
            feats = out.hidden_states[self.feature_layer_ix]
        else:
            feats = out.text_embeds[:, None, :]
            mask = torch.ones(feats.shape[0], 1, dtype=torch.bool, device=feats.device)
        if not isinstance(self.proj_out, torch.nn.Identity):
            feats = feats.to(self.proj_out.weight.dtype)
        emb = self.proj_out(feats) * mask[..., None].to(feats.dtype)
        return emb, mask
