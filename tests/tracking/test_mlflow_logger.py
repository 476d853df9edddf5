"""MLflow logger: params, metrics, audio and figure artifacts in a local sqlite store."""

from __future__ import annotations

import math

import torch

from musicdiff.tracking import MLflowLogger, NullLogger
from musicdiff.tracking.plots import spectrogram_figure


def test_mlflow_logger_local_store(tmp_path):
    from mlflow.tracking import MlflowClient

    logger = MLflowLogger(store_dir=str(tmp_path / "store"), experiment="t")
    logger.start(tmp_path, {"dit.width": 64, "long": "x" * 10000}, tags={"mlflow.runName": "r"})
    logger.log_metrics({"train/loss": 1.5}, step=1)
    logger.log_metrics({"train/loss": 0.5}, step=2)
    t = torch.linspace(0, 1, 8000)
    audio = torch.stack([torch.sin(2 * math.pi * 440 * t)] * 2) * 0.5
    logger.log_audio("demo/a", audio, 8000, step=2)
    logger.log_figure("demo/spec", spectrogram_figure(audio, 8000), step=2)
    run_id = logger.run_id
    logger.finish()

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.data.params["dit.width"] == "64"
    assert run.info.status == "FINISHED"
    hist = client.get_metric_history(run_id, "train/loss")
    assert [m.value for m in hist] == [1.5, 0.5]
    arts = {a.path for a in client.list_artifacts(run_id, "audio")} | {a.path for a in client.list_artifacts(run_id, "figures")}
    assert any(p.endswith(".wav") for p in arts) and any(p.endswith(".png") for p in arts)


def test_null_logger_is_noop(tmp_path):
    logger = NullLogger()
    logger.start(tmp_path, {"a": 1})
    logger.log_metrics({"x": 1.0}, 0)
    logger.log_audio("a", torch.zeros(2, 10), 8000, 0)
    logger.finish()
    assert logger.run_id is None


def test_read_only_store_is_one_clear_line(tmp_path, caplog):
    """Issue 13: a read-only store gave MLflow's logged SQL traceback, then an unrelated AttributeError."""
    import os

    import pytest

    from musicdiff.tracking import TrackingError

    import sqlite3

    store = tmp_path / "store"
    store.mkdir()
    db = store / "mlflow.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE experiments (name TEXT)")  # an existing store, opened read-only below
    con.commit()
    con.close()
    before = db.read_bytes()
    read_only = MLflowLogger(tracking_uri=f"sqlite:///file:{db}?mode=ro&uri=true", experiment="new")
    with caplog.at_level("INFO"), pytest.raises(TrackingError) as info:
        read_only.start(tmp_path, {"a": 1})
    message = str(info.value)
    assert message.startswith(f"MLflow store {db} cannot be written (attempt to write a readonly database)")
    assert "logger.store_dir=" in message and len(message.splitlines()) == 1
    assert not [r for r in caplog.records if r.exc_info]  # no traceback logged on the way
    assert db.read_bytes() == before
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrackingError, match=r"MLflow store .*file/sub cannot be created"):
        MLflowLogger(store_dir=str(tmp_path / "file" / "sub")).start(tmp_path, {})
    if os.geteuid() != 0:  # permissions do not bind root
        os.chmod(store, 0o555)
        try:
            with pytest.raises(TrackingError, match=rf"MLflow store {store} is read-only"):
                MLflowLogger(store_dir=str(store)).start(tmp_path, {})
        finally:
            os.chmod(store, 0o755)
