"""Common interface of the conditioners combined by :class:`ConditionerSet`.

Following stable-audio-tools' ``Conditioner``: a conditioner maps one metadata field of every
batch item (a prompt string, a number of seconds ...) to tokens ``[B, N, output_dim]`` and a
bool mask ``[B, N]`` (True = real token).
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
from torch import nn


class Conditioner(nn.Module):
    """Base class: ``forward(values, device) -> (tokens [B, N, output_dim], mask bool [B, N])``.

    Args:
        dim: width of the features the conditioner computes.
        output_dim: width of the tokens it returns (``cond_dim`` of the set).
        project_out: always add a linear projection (one is added anyway when widths differ).
    """

    def __init__(self, dim: int, output_dim: int, project_out: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.output_dim = output_dim
        self.proj_out = (
            nn.Linear(dim, output_dim) if (dim != output_dim or project_out) else nn.Identity()
        )

    def forward(
        self, values: Sequence[Any], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - interface
        raise NotImplementedError


def resolve_trainable(owner: str, trainable: bool, **aliases: bool | None) -> bool:
    """The one name for "train this pretrained encoder": ``trainable``; old keys still read.

    ``enable_grad`` (T5, MiniLM) and ``finetune`` (CLAP) were earlier names of the same switch;
    an old config or export that sets one keeps working with a ``FutureWarning``.

    Args:
        owner: class name for the messages.
        trainable: the value of the ``trainable`` argument.
        **aliases: the deprecated keys as given (None = not given).

    Returns:
        Whether the encoder is trained.

    Raises:
        ValueError: a deprecated key contradicts ``trainable``.
    """
    for key, value in aliases.items():
        if value is None:
            continue
        warnings.warn(f"{owner}: '{key}' is deprecated, use 'trainable'", FutureWarning, stacklevel=3)
        if trainable and not value:
            raise ValueError(f"{owner}: trainable=True contradicts the deprecated {key}=False; drop '{key}'")
        trainable = bool(value)
    return bool(trainable)


def load_local_pretrained(loader: Any, model_name: str, env_var: str, what: str, **kwargs: Any) -> Any:
    """Call ``loader.from_pretrained(model_name, local_files_only=True)``; explain a miss clearly.

    Args:
        loader: a ``transformers`` class (model or tokenizer) with ``from_pretrained``.
        model_name: a local directory or a hub id already in the local HF cache.
        env_var: the environment variable the configs read the path from.
        what: human name of the model for the error message.
        **kwargs: passed to ``from_pretrained``.

    Returns:
        The loaded object. Nothing is ever downloaded. Under a meta default device a model is
        built from its local config without weights.

    Raises:
        FileNotFoundError: the model is neither a local directory nor in the local HF cache.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # e.g. CLAP's unused audio-tower weights are expected
    try:
        if torch.get_default_device().type == "meta" and hasattr(loader, "config_class"):
            # Structure only (e.g. parameter counting under `with torch.device("meta")`):
            # from_pretrained refuses meta, so build the model from its local config.
            config = loader.config_class.from_pretrained(model_name, local_files_only=True)
            return loader(config)
        return loader.from_pretrained(model_name, local_files_only=True, **kwargs)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"{what} '{model_name}' is not a local directory and is not in the local Hugging Face "
            f"cache (musicdiff never downloads weights). Fetch it yourself, then set "
            f"{env_var}=/path/to/model or override model_name=/path/to/model. ({err})"
        ) from err
    finally:
        hf_logging.set_verbosity(verbosity)
