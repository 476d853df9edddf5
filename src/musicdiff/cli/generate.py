"""`musicdiff-generate`: text-to-music, audio-to-audio and inpainting with a trained model.

Examples:
    musicdiff-generate checkpoint=outputs/demo/dit/export prompt="sine C4 120 bpm left" duration=2
    musicdiff-generate checkpoint=... prompts_file=prompts.csv sampler=dpmpp_2m sampler.steps=50
    musicdiff-generate checkpoint=... prompt="..." init_audio=in.wav init_noise_level=2.0
    musicdiff-generate -m checkpoint=... prompt="..." sampler.cfg_scale=3,7
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm.auto import tqdm

from musicdiff.cli.common import pick_device, tracked_run
from musicdiff.config.paths import config_dir
from musicdiff.config.runtime import prepare_run
from musicdiff.config.validate import validate_targets
from musicdiff.sampling.outputs import FORMATS, GenerationWriter
from musicdiff.sampling.requests import GenerationRequest, expand_requests, read_prompts_file
from musicdiff.training.checkpoint import CheckpointError, exported_config, load_exported

log = logging.getLogger("musicdiff")
MODEL_GROUPS = ("autoencoder", "dit", "conditioner")


def _model_config(cfg: DictConfig) -> tuple[DictConfig, DictConfig | None]:
    """The model groups to build: those the checkpoint was trained with (if any) win."""
    if not cfg.checkpoint:
        return cfg, None
    path = Path(cfg.checkpoint)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint={path} not found: pass the export dir of a musicdiff-train run "
                              f"(<run_dir>/export)")
    trained = exported_config(path)
    with open_dict(cfg):
        for group in MODEL_GROUPS:
            if trained.get(group) is not None:
                cfg[group] = trained[group]
    return cfg, trained


def build_generator(cfg: DictConfig, device: torch.device):
    """Instantiate autoencoder, DiT and conditioner, load weights, wrap them in a Generator."""
    from musicdiff.sampling.pipeline import Generator

    cfg, trained = _model_config(cfg)
    autoencoder, dit, conditioner = (instantiate(cfg[g]) for g in MODEL_GROUPS)
    if cfg.checkpoint:
        load_exported(cfg.checkpoint, "dit", dit)
        load_exported(cfg.checkpoint, "conditioner", conditioner)
        ae_path = cfg.autoencoder_checkpoint or (trained.get("init_autoencoder") if trained is not None else None)
        if ae_path is None and (Path(cfg.checkpoint) / "autoencoder.safetensors").is_file():
            ae_path = cfg.checkpoint
        if ae_path is None:
            raise CheckpointError("no autoencoder weights: the checkpoint's training run had no init_autoencoder; "
                                  "pass autoencoder_checkpoint=<autoencoder export dir>")
        load_exported(ae_path, "autoencoder", autoencoder)
    else:
        log.warning("no checkpoint given: generating with randomly initialised models")
    window_seconds = cfg.window_seconds
    if window_seconds is None and trained is not None:
        window_seconds = OmegaConf.select(trained, "dataset.window_seconds")
    if window_seconds is None:
        raise ValueError("window_seconds is not set and not found in the checkpoint's config")
    window_latents = math.ceil(float(window_seconds) * autoencoder.sample_rate / autoencoder.downsampling_ratio)
    for m in (autoencoder, dit, conditioner):
        m.to(device).eval()
    sampler = instantiate(cfg.sampler)
    return Generator(autoencoder, dit, conditioner, sampler, window_latents=window_latents,
                     decode_chunk_latents=cfg.decode_chunk_latents, device=device,
                     precision=cfg.precision, packed_gemm=cfg.packed_gemm)


def _requests(cfg: DictConfig) -> list[GenerationRequest]:
    if bool(cfg.prompt) == bool(cfg.prompts_file):
        raise ValueError("give exactly one of prompt=... or prompts_file=...")
    reqs = read_prompts_file(cfg.prompts_file) if cfg.prompts_file else [GenerationRequest(cfg.prompt)]
    return expand_requests(reqs, cfg.num_samples, cfg.seed, cfg.duration, cfg.negative_prompt)


def _load_conditioning_audio(path: str, gen) -> torch.Tensor:
    from musicdiff.data.audio_io import load_audio

    return load_audio(path, gen.sample_rate, gen.autoencoder.io_channels)


def generate(cfg: DictConfig) -> list[Path]:
    """Generate every requested clip; returns the written audio paths (see module examples)."""
    validate_targets(cfg)
    if cfg.format not in FORMATS:
        raise ValueError(f"format must be wav or flac, got {cfg.format!r}")
    requests = _requests(cfg)
    device = pick_device(cfg.device)
    gen = build_generator(cfg, device)
    run_dir, digest = prepare_run(cfg)
    out_dir = Path(cfg.out_dir or run_dir / "audio")
    out_dir.mkdir(parents=True, exist_ok=True)
    extra: dict = {}
    if cfg.init_audio:
        extra["init_audio"] = _load_conditioning_audio(cfg.init_audio, gen)
        extra["init_noise_level"] = float(cfg.init_noise_level)
    if cfg.inpaint_audio:
        from musicdiff.sampling.inpaint import InpaintRequest

        audio = _load_conditioning_audio(cfg.inpaint_audio, gen)
        keep = torch.zeros(audio.shape[-1], dtype=torch.bool)
        for start, end in (cfg.inpaint_keep or [[0.0, audio.shape[-1] / gen.sample_rate]]):
            keep[int(start * gen.sample_rate): int(end * gen.sample_rate)] = True
        extra["inpaint"] = InpaintRequest(audio, keep)
    written: list[Path] = []
    writer = GenerationWriter(out_dir, gen.sample_rate, cfg.format, digest, append=True)
    with tracked_run(cfg, run_dir, digest, "generate") as logger, writer:
        for lo in tqdm(range(0, len(requests), cfg.batch_size), desc="generate", unit="batch"):
            batch = requests[lo: lo + cfg.batch_size]
            audios = gen.generate([r.prompt for r in batch], durations=[r.duration or gen.max_duration for r in batch],
                                  seeds=[r.seed for r in batch], negative_prompts=[r.negative_prompt for r in batch]
                                  if any(r.negative_prompt for r in batch) else None, **extra)
            for j, (req, audio) in enumerate(zip(batch, audios)):
                path = writer.write(f"{lo + j:05d}_seed{req.seed}", audio, req)
                logger.log_audio(f"generate/{lo + j:05d}", audio, gen.sample_rate, 0)
                if cfg.spectrograms:
                    from musicdiff.tracking.plots import save_figure, spectrogram_figure

                    save_figure(spectrogram_figure(audio, gen.sample_rate, title=req.prompt[:80]),
                                path.with_suffix(".png"))
                written.append(path)
        logger.log_artifact(writer.manifest)
    log.info("wrote %d clips to %s", len(written), out_dir)
    return written


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="generate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    generate(cfg)


if __name__ == "__main__":
    main()
