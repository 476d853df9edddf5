"""`musicdiff-memorization`: does the model reproduce its training data? (SA2 §4.5)

Embeds every training file (cached across runs), finds repeated training items, generates from
in-distribution prompts (the repeated items' captions, then other training captions) and from an
out-of-distribution prompts file, ranks the generations by their nearest-neighbour similarity to
the training set and writes ``report/index.html`` (the top generations next to their closest
training items, with players and spectrograms), ``summary.json`` and the embeddings; metrics and
the report go to MLflow. With ``generated_dir=...`` existing audio is analysed instead. Next to the
replica detector (``embedder=``) a real music model (``music_embedder=``, musicnn) gives FD, pooled
KL and nearest-neighbour numbers of the generations against the training set
(:mod:`musicdiff.memorization.music_metrics`).

Examples:
    musicdiff-memorization checkpoint=outputs/demo/dit/export ood_prompts_file=experiments/memorization/ood_prompts.txt
    musicdiff-memorization generated_dir=outputs/demo/generate/audio embedder=melstats
    musicdiff-memorization embedder=clap dataset=audio_dir dataset.root=/data/music checkpoint=... top_n=100
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm.auto import tqdm

from musicdiff.cli.common import pick_device, tracked_run
from musicdiff.config.paths import config_dir
from musicdiff.config.runtime import atomic_write_text, prepare_run
from musicdiff.config.validate import validate_targets
from musicdiff.memorization.analysis import (
    IN_DISTRIBUTION, OUT_OF_DISTRIBUTION, AudioItem, embed_readable_items, in_distribution_prompts,
    run_memorization_analysis,
)
from musicdiff.memorization.inputs import (
    MANIFEST, EmbeddingCache, embedding_key, folder_items, link_or_copy, training_items,
)
from musicdiff.memorization.music_metrics import (
    cached_music_features, music_features, music_metrics, write_music_summary,
)
from musicdiff.memorization.repeats import find_repeats
from musicdiff.sampling.outputs import GenerationWriter
from musicdiff.sampling.requests import GenerationRequest, expand_requests, read_prompts_file

log = logging.getLogger("musicdiff")


def _use_checkpoint_autoencoder(cfg: DictConfig) -> None:
    """Take the autoencoder group from the model, so the dataset follows the model's rate and channels."""
    from musicdiff.pretrained import model_config

    groups = model_config(cfg.autoencoder_from or cfg.checkpoint)
    if groups.get("autoencoder") is not None:
        with open_dict(cfg):
            cfg.autoencoder = groups.autoencoder


def _training_embeddings(cfg: DictConfig, embedder, items: list[AudioItem], emb_dir: Path):
    """Embeddings of the readable training items, from the cache when embedder+data are unchanged."""
    key = embedding_key(cfg.embedder, cfg.dataset)
    cache = EmbeddingCache(cfg.cache_dir, key) if cfg.cache_dir else None
    cached = cache.load(items) if cache is not None else None
    if cached is not None:
        emb, kept, skipped = cached
        link_or_copy(cache.embeddings_path, emb_dir / "train_embeddings.npy")
    else:
        emb, kept, skipped = embed_readable_items(embedder, items, cfg.embed_batch_size, progress=cfg.progress,
                                                  desc="embed training set")
        if cache is not None:
            cache.save(items, emb, kept, skipped, {"embedder": OmegaConf.to_container(cfg.embedder, resolve=True),
                                                   "dataset": OmegaConf.to_container(cfg.dataset, resolve=True)})
            link_or_copy(cache.embeddings_path, emb_dir / "train_embeddings.npy")
        else:
            np.save(emb_dir / "train_embeddings.npy", emb)
    kept_items = [items[i] for i in kept]
    (emb_dir / "train_items.json").write_text(json.dumps(
        {"embedding_key": key, "cache": str(cache.dir) if cache else None,
         "items": [{"name": it.name, "prompt": it.prompt, "path": it.path} for it in kept_items]}, indent=1))
    return emb, kept_items, Counter(skipped), key, cached is not None


def _music_model(cfg: DictConfig, items: list[AudioItem], emb_dir: Path):
    """The music embedder, its name and its training-set features (cached), or ``None`` when off."""
    if not cfg.music_metrics or cfg.get("music_embedder") is None:
        return None
    embedder = instantiate(cfg.music_embedder)
    name = type(embedder).__name__.removesuffix("Embedder").lower()
    key = embedding_key(cfg.music_embedder, cfg.dataset)
    feats, hit = cached_music_features(cfg.cache_dir, key, items,
                                       lambda: music_features(embedder, items, cfg.embed_batch_size))
    np.save(emb_dir / f"train_{name}_features.npy", feats["features"])
    log.info("%s features of %d training items (cache %s)", name, len(items), "hit" if hit else "miss")
    return embedder, name, feats, hit


def _requests(cfg: DictConfig, in_prompts: list[str]) -> list[tuple[str, GenerationRequest]]:
    """(split, request) pairs: in-distribution prompts, then the out-of-distribution file."""
    reqs = [(IN_DISTRIBUTION, GenerationRequest(p)) for p in in_prompts]
    if cfg.ood_prompts_file:
        ood = read_prompts_file(cfg.ood_prompts_file)
        reqs += [(OUT_OF_DISTRIBUTION, r) for r in ood[:cfg.max_out_of_distribution or None]]
    expanded = expand_requests([r for _, r in reqs], cfg.num_samples, cfg.seed, cfg.duration)
    splits = [split for split, _ in reqs for _ in range(cfg.num_samples)]
    return list(zip(splits, expanded))


def _generate(cfg: DictConfig, requests: list[tuple[str, GenerationRequest]], out_dir: Path,
              digest: str) -> list[AudioItem]:
    """Generate every request with the checkpoint into ``out_dir`` (WAVs + generations.jsonl)."""
    from musicdiff.pretrained.generator import build_generator

    gen = build_generator(cfg, pick_device(cfg.device))
    items: list[AudioItem] = []
    counts: Counter = Counter()
    with GenerationWriter(out_dir, gen.sample_rate, "wav", digest, append=False) as writer:
        for lo in tqdm(range(0, len(requests), cfg.batch_size), desc="generate", unit="batch",
                       disable=not cfg.progress, dynamic_ncols=True):
            batch = requests[lo:lo + cfg.batch_size]
            durations = [min(float(r.duration or gen.max_duration), gen.max_duration) for _, r in batch]
            audios = gen.generate([r.prompt for _, r in batch], durations=durations, seeds=[r.seed for _, r in batch],
                                  negative_prompts=[r.negative_prompt for _, r in batch]
                                  if any(r.negative_prompt for _, r in batch) else None)
            for (split, r), audio in zip(batch, audios):
                path = writer.write(f"{split}_{counts[split]:05d}", audio, r, split=split)
                counts[split] += 1
                items.append(AudioItem(path.name, r.prompt, path=str(path), split=split))
    log.info("generated %s clips into %s", dict(counts), out_dir)
    return items


def memorize(cfg: DictConfig) -> dict[str, float]:
    """Run the memorization analysis; returns its metrics (also logged, and in ``summary.json``)."""
    if bool(cfg.checkpoint) == bool(cfg.generated_dir):
        raise ValueError("give exactly one of checkpoint=<model export dir> (generate, then analyse) or "
                         "generated_dir=<folder of generated audio> (analyse only)")
    validate_targets(cfg)  # before any model is opened
    if cfg.checkpoint:
        _use_checkpoint_autoencoder(cfg)
    run_dir, digest = prepare_run(cfg)
    emb_dir, report_dir = run_dir / "embeddings", run_dir / "report"
    emb_dir.mkdir(parents=True, exist_ok=True)
    with tracked_run(cfg, run_dir, digest, "memorization") as logger:
        embedder = instantiate(cfg.embedder)
        items, train_skipped = training_items(instantiate(cfg.dataset), cfg.seed)
        train_emb, items, emb_skipped, key, hit = _training_embeddings(cfg, embedder, items, emb_dir)
        train_skipped.update(emb_skipped)
        index_kwargs = {"backend": cfg.index_backend, "device": str(pick_device(cfg.device))}
        repeats = find_repeats(train_emb, cfg.repeat_threshold, cfg.repeat_k, **index_kwargs)
        in_prompts = in_distribution_prompts(items, repeats, cfg.num_in_distribution, fill=True, seed=cfg.seed)
        log.info("%d training items (%d repeated, skipped %s), %d in-distribution prompts", len(items),
                 len(repeats.repeated_items), dict(train_skipped), len(in_prompts))

        if cfg.generated_dir:
            ood = {r.prompt for r in read_prompts_file(cfg.ood_prompts_file)} if cfg.ood_prompts_file else set()
            captions = {it.prompt for it in items if it.prompt}

            def split_of(prompt: str | None) -> str | None:
                return OUT_OF_DISTRIBUTION if prompt in ood else IN_DISTRIBUTION if prompt in captions else None

            gens = folder_items(cfg.generated_dir, cfg.generated_prompts, split_of)
        else:
            gens = _generate(cfg, _requests(cfg, in_prompts), run_dir / "generated", digest)
            logger.log_artifact(run_dir / "generated" / MANIFEST)
        gen_emb, kept, gen_skipped = embed_readable_items(embedder, gens, cfg.embed_batch_size, progress=cfg.progress,
                                                          desc="embed generations")
        gens = [gens[i] for i in kept]
        music = _music_model(cfg, items, emb_dir)
        per_gen: list = []
        if music is not None:
            music_embedder, music_name, train_music, music_hit = music
            gen_music = music_features(music_embedder, gens, cfg.embed_batch_size)
            np.save(emb_dir / f"generation_{music_name}_features.npy", gen_music["features"])

            def extra_metrics(ranking):
                scalars, per = music_metrics(train_music, gen_music, gens, ranking, f"memorization/{music_name}",
                                             index_kwargs)
                per_gen.extend(per)
                scalars[f"memorization/{music_name}/cache_hit"] = float(music_hit)
                write_music_summary(emb_dir / f"{music_name}_metrics.json", scalars, per, gens, items)
                return scalars
        else:
            extra_metrics = None

        result = run_memorization_analysis(
            embedder, items, gens, report_dir, k=cfg.k, top_n=cfg.top_n, repeat_threshold=cfg.repeat_threshold,
            repeat_k=cfg.repeat_k, training_embeddings=train_emb, generation_embeddings=gen_emb, repeats=repeats,
            index_kwargs=index_kwargs, embed_media=cfg.embed_media, report_sample_rate=cfg.report_sample_rate,
            max_report_seconds=cfg.max_report_seconds, logger=logger, embeddings_dir=emb_dir,
            save_training_embeddings=False, extra_metrics=extra_metrics)
        extra = {"memorization/num_training_items": float(len(items)),
                 "memorization/num_skipped_training": float(sum(train_skipped.values())),
                 "memorization/num_skipped_generated": float(sum(gen_skipped.values())),
                 "memorization/embedding_cache_hit": float(hit)}
        logger.log_metrics(extra, 0)
        metrics = {**result.summary, **extra}
        top = [{"rank": r, "name": m.name, "prompt": m.prompt, "split": m.split, "similarity": m.top_similarity,
                "neighbours": [{"name": items[t].name, "prompt": items[t].prompt, "similarity": s}
                               for t, s in zip(m.neighbours, m.similarities)]}
               | ({music[1]: {"nearest": items[per_gen[m.generation]["nearest"]].name,
                              "similarity": per_gen[m.generation]["similarity"]}} if per_gen else {})
               for r, m in enumerate(result.ranking[:cfg.top_n], 1)]
        atomic_write_text(run_dir / "summary.json", json.dumps({
            "config_hash": digest, "metrics": metrics, "report": str(result.report_path.relative_to(run_dir)),
            "embedding_cache": {"key": key, "hit": hit,
                                "dir": str(Path(cfg.cache_dir) / key) if cfg.cache_dir else None},
            "skipped": {"training": dict(train_skipped), "generated": dict(gen_skipped)},
            "num_generations": len(gens), "repeat_groups": [[items[i].name for i in g] for g in repeats.groups],
            "top": top}, indent=1))
        logger.log_artifact(run_dir / "summary.json")
    log.info("memorization report: %s", result.report_path)
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="memorization")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the highest nearest-neighbour similarity of any generation."""
    return float(memorize(cfg)["memorization/all/max_nn_similarity"])


if __name__ == "__main__":
    main()
