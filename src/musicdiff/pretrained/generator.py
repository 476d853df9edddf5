"""Build the :class:`~musicdiff.sampling.pipeline.Generator` of an inference entry point's root config.

``musicdiff-generate``, ``musicdiff-memorization``, the sweeps and the app share the root keys
``checkpoint``, ``autoencoder_from``, ``adapters``, the ``generator`` node (window, chunked
decoding, precision, packed GEMMs) and the ``sampler`` group; this is the one function that turns
them into a Generator.
"""

from __future__ import annotations

import logging

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from musicdiff.pretrained.load import Pretrained, load_pretrained

log = logging.getLogger("musicdiff")
MODEL_GROUPS = ("autoencoder", "dit", "conditioner")


def load_for_generation(cfg: DictConfig) -> Pretrained:
    """Load the model of ``cfg.checkpoint`` (random weights from the config's groups without one)."""
    if not cfg.checkpoint:
        log.warning("no checkpoint given: generating with randomly initialised models")
    pre = load_pretrained(cfg.checkpoint or None, autoencoder_from=cfg.get("autoencoder_from") or None,
                          adapters=list(cfg.get("adapters") or []), fallback=cfg if not cfg.checkpoint else None)
    with open_dict(cfg):  # record the architecture really used in the run's config
        for group in MODEL_GROUPS:
            if group in cfg and pre.config.get(group) is not None:
                cfg[group] = pre.config[group]
    return pre


def build_generator(cfg: DictConfig, device: torch.device, pretrained: Pretrained | None = None):
    """The Generator for a root config with ``checkpoint``/``autoencoder_from``/``adapters``/``generator``/``sampler``.

    Args:
        cfg: a composed ``generate`` / ``memorization`` root config.
        device: where to run.
        pretrained: already loaded parts (default: :func:`load_for_generation`).

    Returns:
        A :class:`musicdiff.sampling.pipeline.Generator`.
    """
    from musicdiff.diffusion import objective_of
    from musicdiff.sampling.pipeline import Generator

    pre = pretrained or load_for_generation(cfg)
    gen_cfg = cfg.generator
    window_latents = pre.window_latents(gen_cfg.window_seconds)
    for m in pre.modules().values():
        m.to(device).eval()
    return Generator(pre.autoencoder, pre.dit, pre.conditioner, instantiate(cfg.sampler), window_latents=window_latents,
                     decode_chunk_latents=gen_cfg.decode_chunk_latents, device=device, precision=gen_cfg.precision,
                     packed_gemm=gen_cfg.packed_gemm, objective=objective_of(pre.config.get("diffusion")))
