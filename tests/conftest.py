"""Shared fixtures: Hydra composition against the real conf/ tree, offline hub settings."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never call a hub from a test
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("MUSICDIFF_TEST_THREADS", "1")))


TINY_PIPELINE_FIXTURES = {"tiny_pipeline_paths", "trained_tiny"}


def pytest_collection_modifyitems(config, items):
    """Run the tests of the shared tiny pipeline first (they form one pytest-xdist scope, below)."""
    grouped = [item for item in items if TINY_PIPELINE_FIXTURES & set(getattr(item, "fixturenames", ()))]
    ids = {id(item) for item in grouped}
    items[:] = grouped + [item for item in items if id(item) not in ids]


def _tiny_pipeline_files(rootpath) -> set[str]:
    """Test files (relative to ``rootpath``) whose tests use the shared tiny pipeline."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    return {path.relative_to(rootpath).as_posix() for path in here.rglob("test_*.py")
            if any(name in path.read_text(encoding="utf-8") for name in TINY_PIPELINE_FIXTURES)}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` (``make test``), with every file of the shared tiny pipeline in one scope.

    Each test file runs on one worker (its module-scoped fixtures are built once), and one worker trains
    the tiny pipeline (~5 minutes) and runs the learning tests built on it while the other takes the
    remaining files. The scopes go out in collection order, which starts with the pipeline's tests.
    """
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    pipeline_files = _tiny_pipeline_files(config.rootpath)

    class PipelineFirstScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return "tiny_pipeline" if path in pipeline_files else path

    config.option.loadscopereorder = False
    return PipelineFirstScheduling(config, log)


@pytest.fixture()
def compose_cfg(tmp_path):
    """Compose a root config (``train``, ``generate`` ...) with overrides; paths go to tmp_path."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from musicdiff.config.paths import config_dir

    def _compose(name: str = "train", overrides: list[str] | None = None):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = compose(config_name=name, overrides=[
                f"paths.log_dir={tmp_path / 'outputs'}",
                f"paths.output_dir={tmp_path / 'run'}",
                *(overrides or []),
            ])
        return cfg

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def _tiny_text_models(tmp_path_factory):
    """Tiny random-weight T5 and CLAP saved locally (never downloaded)."""
    from tests.helpers.tiny_text_models import make_tiny_clap, make_tiny_t5

    root = tmp_path_factory.mktemp("text_models")
    return make_tiny_t5(str(root / "t5")), make_tiny_clap(str(root / "clap"))


@pytest.fixture()
def text_model_env(_tiny_text_models, monkeypatch):
    """Point the text-conditioner configs at the tiny local models."""
    t5, clap = _tiny_text_models
    monkeypatch.setenv("MUSICDIFF_T5_PATH", t5)
    monkeypatch.setenv("MUSICDIFF_CLAP_PATH", clap)


@pytest.fixture(scope="session")
def _synthetic_audio_dir(tmp_path_factory):
    from musicdiff.data.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic_audio")
    generate_synthetic_dataset(str(root), num_items=8, sample_rate=16000, seconds=2.0, seed=0)
    return root


def compose_root(name: str, overrides: list[str]):
    """Compose a root config outside a Hydra app (session-scoped fixtures)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from musicdiff.config.paths import config_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides)
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture(scope="session")
def tiny_latent_dir(_synthetic_audio_dir, tmp_path_factory):
    """The synthetic folder encoded with the (randomly initialised) tiny autoencoder."""
    from hydra.utils import instantiate

    from musicdiff.data.latent_writer import encode_dataset

    cfg = compose_root("train", ["autoencoder=tiny"])
    torch.manual_seed(0)
    autoencoder = instantiate(cfg.autoencoder).eval()
    out = tmp_path_factory.mktemp("latents")
    encode_dataset(str(_synthetic_audio_dir), autoencoder, out, shard_size=4, progress=False)
    return out


@pytest.fixture(scope="session")
def _shard_dirs(_synthetic_audio_dir, tmp_path_factory):
    """The synthetic folder as WebDataset audio shards and as tiny-autoencoder latent tar shards."""
    from hydra.utils import instantiate

    from musicdiff.data.latent_writer import encode_dataset
    from musicdiff.data.make_shards import make_shards

    audio = tmp_path_factory.mktemp("shards") / "audio"
    make_shards(_synthetic_audio_dir, audio, shard_size=4, progress=False)
    torch.manual_seed(0)
    autoencoder = instantiate(compose_root("train", ["autoencoder=tiny"]).autoencoder).eval()
    latents = tmp_path_factory.mktemp("latent_shards")
    encode_dataset(str(_synthetic_audio_dir), autoencoder, latents, shard_size=4, progress=False, format="webdataset")
    return audio, latents


@pytest.fixture()
def data_env(_synthetic_audio_dir, tiny_latent_dir, _shard_dirs, monkeypatch):
    """Point the dataset configs at a small synthetic folder, its tiny-autoencoder latents and their shards."""
    monkeypatch.setenv("MUSICDIFF_AUDIO_DIR", str(_synthetic_audio_dir))
    monkeypatch.setenv("MUSICDIFF_LATENT_DIR", str(tiny_latent_dir))
    monkeypatch.setenv("MUSICDIFF_SHARDS", str(_shard_dirs[0]))
    monkeypatch.setenv("MUSICDIFF_LATENT_SHARDS", str(_shard_dirs[1]))


@pytest.fixture(scope="session")
def tiny_pipeline_paths(tmp_path_factory):
    """The tiny pipeline trained once per session (tests/helpers/tiny_pipeline.py): export paths.

    ``MUSICDIFF_TEST_TINY_PIPELINE=<dir>`` keeps it in ``<dir>`` instead, reused across sessions.
    Under pytest-xdist its tests form one scope (:func:`pytest_xdist_make_scheduler`), so one worker
    trains it; a file lock in the directory all workers share keeps it one training under other ``--dist``
    modes too.
    """
    from filelock import FileLock

    from tests.helpers.tiny_pipeline import tiny_pipeline
    from tests.helpers.trained_tiny import SESSION_DIR

    if os.environ.get("MUSICDIFF_TEST_TINY_PIPELINE"):
        return tiny_pipeline(os.environ["MUSICDIFF_TEST_TINY_PIPELINE"])
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's base temp directory, above every worker's own
    with FileLock(str(shared / f"{SESSION_DIR}.lock")):
        return tiny_pipeline(shared / SESSION_DIR)


@pytest.fixture(scope="session")
def trained_tiny(tiny_pipeline_paths):
    """The trained tiny autoencoder, DiT and conditioner in memory (tests/helpers/trained_tiny.py)."""
    from tests.helpers.trained_tiny import load_trained_tiny

    return load_trained_tiny(tiny_pipeline_paths)
