"""Structured root configs (dataclasses) for every entry point.

The root keys of each entry point are typed here and registered in Hydra's ConfigStore, so a
misspelt or unknown *root* key fails at start with Hydra's "Key '...' not in 'TrainConfig'" error.
Group nodes (``autoencoder``, ``dit`` ...) are typed ``Any`` because each option has its own
``_target_``; their keys are checked against the target's signature by
:func:`musicdiff.config.validate.validate_targets`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class PathsConfig:
    """Where runs write their files."""

    root_dir: str = "."  # working directory the relative paths below are resolved from
    log_dir: str = "outputs"  # root of all run directories and of the shared MLflow store
    output_dir: str = "${hydra:runtime.output_dir}"  # this run's directory (Hydra's run dir)
    data_dir: str = "${paths.log_dir}/data"  # caches such as the generated synthetic dataset


@dataclass
class GeneratorConfig:
    """How the inference entry points generate (the ``generator`` node of generate and memorization)."""

    window_seconds: Optional[float] = None  # model window; default: the training crop length recorded with the model
    decode_chunk_latents: Optional[int] = 128  # decode in chunks of this many latents (bounded memory)
    precision: str = "fp32"  # fp32 | bf16 | fp16: autocast precision of the DiT while sampling
    packed_gemm: bool = True  # fp32 on CPU: MKL packed-weight GEMMs in the DiT while sampling


@dataclass
class TrainConfig:
    """Root of ``conf/train.yaml``."""

    task: Any = MISSING
    autoencoder: Any = MISSING
    dit: Any = None
    adapter: Any = None  # adapter fine-tuning (conf/adapter/*)
    conditioner: Any = None
    diffusion: Any = None
    sampler: Any = None
    dataset: Any = MISSING
    optim: Any = None
    lr_schedule: Any = None
    trainer: Any = MISSING
    logger: Any = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    run_name: str = "train"  # MLflow run name
    seed: int = 0  # global seed (torch, numpy, python, data order)
    init_from: Optional[str] = None  # fine-tune: export | checkpoints/step_* | SAT checkpoint to start from
    autoencoder_from: Optional[str] = None  # take the (frozen) autoencoder from this export/checkpoint/SAT file
    objective: str = "loss"  # metric returned to sweepers (lower is better)


@dataclass
class GenerateConfig:
    """Root of ``conf/generate.yaml``."""

    autoencoder: Any = MISSING
    dit: Any = MISSING
    conditioner: Any = MISSING
    diffusion: Any = None
    sampler: Any = MISSING
    logger: Any = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    run_name: str = "generate"
    checkpoint: Optional[str] = None  # model: export dir | checkpoints/step_* dir | SAT model.safetensors/.ckpt
    autoencoder_from: Optional[str] = None  # take the autoencoder from this source instead
    adapters: list = field(default_factory=list)  # ["adapter.safetensors:scale", ...] stacked on the DiT
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    prompt: Optional[str] = None  # single prompt
    prompts_file: Optional[str] = None  # one prompt per line, or CSV/JSON with prompt,duration,seed
    negative_prompt: Optional[str] = None
    duration: Optional[float] = None  # seconds (seconds_total); default: the model's window
    num_samples: int = 1  # generations per prompt
    batch_size: int = 4
    seed: int = 0
    init_audio: Optional[str] = None  # audio-to-audio: path of the init recording
    init_noise_level: float = 1.0  # sigma to start from with init_audio
    inpaint_audio: Optional[str] = None  # inpainting/continuation: audio to keep
    inpaint_keep: Optional[list] = None  # [[start_s, end_s], ...] regions of inpaint_audio to keep
    inpaint_crossfade: float = 0.015  # seconds of crossfade from the pasted-back original into the generated span
    out_dir: Optional[str] = None  # default: <run dir>/audio
    format: str = "wav"  # wav | flac
    spectrograms: bool = False  # also write spectrogram PNGs
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class EvaluateConfig:
    """Root of ``conf/evaluate.yaml``."""

    metrics: Any = MISSING
    logger: Any = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    run_name: str = "evaluate"
    generated_dir: Optional[str] = None  # folder of audio to score
    reference_dir: Optional[str] = None  # reference audio (FD, KL, reconstruction)
    prompts: Optional[str] = None  # prompts file/manifest for CLAP scores (default: generated_dir/generations.jsonl)
    reconstruction: bool = False  # autoencoder reconstruction metrics of generated vs reference
    sample_rate: int = 44100  # rate audio is loaded at for the reconstruction metrics
    seed: int = 0


@dataclass
class EncodeConfig:
    """Root of ``conf/encode.yaml``."""

    autoencoder: Any = MISSING
    dataset: Any = MISSING
    logger: Any = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    run_name: str = "encode"
    autoencoder_from: Optional[str] = None  # the autoencoder: export | checkpoint | SAT file (required unless random init is OK)
    allow_random_init: bool = False  # encode with random weights (tests/demo only)
    out_dir: str = "${paths.output_dir}/latents"  # where shards go
    shard_size: int = 256  # items per shard
    batch_size: int = 1
    chunked: bool = True  # chunked encoding for long files
    sample: bool = False  # store posterior samples (seeded) instead of posterior means
    format: str = "safetensors"  # safetensors (latent shards) | webdataset (tar shards for dataset=webdataset_latents)
    seed: int = 0
    device: str = "auto"


@dataclass
class SweepConfig:
    """Root of ``conf/sweep.yaml``."""

    logger: Any = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    run_name: str = "sweep"
    kind: str = "generate_eval"  # generate_eval (generate + evaluate per trial) | train | python
    objective_fn: Optional[str] = None  # kind=python: "package.module:function" trial runner
    checkpoint: Optional[str] = None  # generate_eval: the model export dir to sweep over
    study_name: str = "musicdiff"
    storage: str = "sqlite:///${paths.log_dir}/optuna.db"  # RDB storage: resumable, shared by workers
    direction: str = "minimize"
    n_trials: int = 8  # total finished trials wanted (a resumed study runs only the rest)
    n_jobs: int = 1  # parallel trials in this process (more workers: more processes, same storage)
    seed: int = 0  # base of every worker's TPE seed (mixed with worker identity and trials so far)
    worker_id: Optional[str] = None  # worker identity for its seed (default: SLURM array task, else host-pid)
    heartbeat_interval: Optional[int] = 60  # seconds between a running trial's heartbeats (null: off)
    grace_period: Optional[int] = None  # seconds without heartbeat before a trial is failed (null: 2x interval)
    max_retries: Optional[int] = 2  # re-runs of a trial whose worker died (null: unlimited)
    max_consecutive_failures: int = 3  # a worker stops after this many failed trials in a row (0: never)
    objective: str = "fd_musicnn"  # metric key returned by the trial runner
    search_space: Any = field(default_factory=dict)
    base_overrides: list = field(default_factory=list)  # overrides of every trial's config
    eval_overrides: list = field(default_factory=list)  # overrides of the evaluate config (generate_eval)
    eval_metrics: Optional[str] = "musicnn"  # conf/metrics option of the trials' evaluation (null: evaluate's default)


@dataclass
class MemorizationConfig:
    """Root of ``conf/memorization.yaml`` (SA2 §4.5 memorization analysis)."""

    embedder: Any = MISSING
    music_embedder: Any = None  # real music model of the FD/KL/NN numbers (conf/embedder/<option>)
    dataset: Any = MISSING
    autoencoder: Any = MISSING
    sampler: Any = MISSING
    logger: Any = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    run_name: str = "memorization"
    music_metrics: bool = True  # report music_embedder's numbers next to the detector's
    seed: int = 0  # generation seeds and the order of the filling training captions
    checkpoint: Optional[str] = None  # model to generate from: export | checkpoints/step_* | SAT file
    autoencoder_from: Optional[str] = None  # take the autoencoder from this source instead
    adapters: list = field(default_factory=list)  # ["adapter.safetensors:scale", ...] stacked on the DiT
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    generated_dir: Optional[str] = None  # analyse this folder of generated audio instead of generating
    generated_prompts: Optional[str] = None  # prompts of generated_dir files (default: its generations.jsonl)
    ood_prompts_file: Optional[str] = None  # out-of-distribution prompts (one per line, CSV, JSON, JSONL)
    num_in_distribution: int = 100  # in-distribution prompts: repeated items' captions, then other captions
    max_out_of_distribution: Optional[int] = None  # cap on prompts read from ood_prompts_file
    num_samples: int = 1  # generations per prompt
    duration: Optional[float] = None  # seconds per generation (default: the model window)
    batch_size: int = 8  # generations per batch
    embed_batch_size: int = 32  # clips per embedding batch
    k: int = 3  # closest training items kept per generation
    top_n: int = 50  # generations in the report
    repeat_threshold: float = 0.95  # cosine similarity at which two items count as replicas
    repeat_k: int = 16  # neighbours examined per training item when finding repeats
    index_backend: str = "torch"  # torch | faiss | auto
    cache_dir: Optional[str] = "${paths.data_dir}/memorization"  # training-embedding cache (null: off)
    embed_media: Optional[bool] = None  # report media inline (null: when small)
    report_sample_rate: int = 24000  # audio rate in the report
    max_report_seconds: float = 30.0  # report clips are cut to this length
    progress: bool = True  # progress bars
    device: str = "auto"  # generation and index device: auto | cpu | cuda


@dataclass
class AppConfig:
    """Root of ``conf/app.yaml`` (``musicdiff-app``, the Gradio page)."""

    autoencoder: Any = MISSING
    dit: Any = MISSING
    conditioner: Any = MISSING
    diffusion: Any = None
    sampler: Any = MISSING
    paths: PathsConfig = field(default_factory=PathsConfig)
    run_name: str = "app"
    checkpoint: Optional[str] = None  # model: export dir | checkpoints/step_* dir | SAT model.safetensors/.ckpt
    autoencoder_from: Optional[str] = None  # take the autoencoder from this source instead
    adapters: list = field(default_factory=list)  # ["adapter.safetensors:scale", ...]; scales adjustable per request
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    server_name: str = "127.0.0.1"  # bind address (0.0.0.0: reachable from the network)
    server_port: int = 7860
    share: bool = False  # ask Gradio for a public *.gradio.live link
    max_batch: int = 4  # most clips per request
    max_queue: int = 16  # requests waiting for the model at most
    out_dir: str = "${paths.log_dir}/app/audio"  # generated clips, spectrograms, generations.jsonl
    tracking_uri: str = "sqlite:///${paths.log_dir}/mlflow.db"  # MLflow store browsed by the gallery
    gallery_cache_dir: str = "${paths.log_dir}/app/gallery_cache"  # local copies of the runs' audio
    gallery_max_runs: int = 200  # most recent runs listed
    listening_file: str = "${paths.log_dir}/app/listening_test.jsonl"  # blind A/B votes
    seed: int = 0  # global seed at start (requests carry their own seeds)
    device: str = "auto"  # auto | cpu | cuda


def register_configs() -> None:
    """Register the root schemas so ``defaults: [<name>_schema, ...]`` can extend them."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="generate_schema", node=GenerateConfig)
    cs.store(name="evaluate_schema", node=EvaluateConfig)
    cs.store(name="encode_schema", node=EncodeConfig)
    cs.store(name="sweep_schema", node=SweepConfig)
    cs.store(name="memorization_schema", node=MemorizationConfig)
    cs.store(name="app_schema", node=AppConfig)
