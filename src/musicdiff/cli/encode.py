"""`musicdiff-encode`: pre-encode a dataset into latent shards for DiT training (resumable).

Examples:
    musicdiff-encode autoencoder_from=outputs/demo/autoencoder/export
    musicdiff-encode autoencoder_from=exports/stable-audio-open-1.0 dataset=audio_dir dataset.root=/data/music
    musicdiff-encode autoencoder_from=... dataset=webdataset dataset.urls=/data/shards format=webdataset
"""

from __future__ import annotations

import logging

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from musicdiff.cli.common import pick_device, tracked_run
from musicdiff.config.paths import config_dir
from musicdiff.config.runtime import prepare_run
from musicdiff.config.validate import validate_targets
from musicdiff.pretrained import PretrainedError, load_pretrained

log = logging.getLogger("musicdiff")


def encode(cfg: DictConfig) -> dict:
    """Encode every usable file of ``cfg.dataset`` with the autoencoder; returns the summary."""
    from musicdiff.data.latent_writer import encode_dataset

    validate_targets(cfg)  # before the autoencoder is loaded
    if cfg.autoencoder_from:
        pre = load_pretrained(cfg.autoencoder_from, parts=("autoencoder",))
        with open_dict(cfg):
            cfg.autoencoder = pre.config.autoencoder  # the architecture the weights were trained with
        autoencoder = pre.autoencoder
    elif not cfg.allow_random_init:
        raise PretrainedError("autoencoder_from=<export dir | checkpoint | SAT checkpoint> is required "
                              "(allow_random_init=true encodes with random weights, for tests only)")
    run_dir, digest = prepare_run(cfg)
    with tracked_run(cfg, run_dir, digest, "encode") as logger:
        if not cfg.autoencoder_from:
            autoencoder = instantiate(cfg.autoencoder)
        autoencoder.to(pick_device(cfg.device)).eval()
        dataset = instantiate(cfg.dataset)
        summary = encode_dataset(dataset, autoencoder, cfg.out_dir, shard_size=cfg.shard_size,
                                 batch_size=cfg.batch_size, chunked=cfg.chunked, seed=cfg.seed,
                                 format=cfg.format, sample=cfg.sample)
        skipped = summary.get("skipped", {})
        logger.log_metrics({"encode/encoded": summary.get("encoded", 0), "encode/items": summary.get("items", 0),
                            "encode/normalised": summary.get("normalised", 0),
                            **{f"encode/skipped_{k}": v for k, v in skipped.items()}}, 0)
    log.info("encoded %s new files (%s already done) into %s; skipped %s; scaled down to full scale %s",
             summary.get("encoded"), summary.get("already_done"), cfg.out_dir, skipped, summary.get("normalised", 0))
    return summary


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="encode")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    encode(cfg)


if __name__ == "__main__":
    main()
