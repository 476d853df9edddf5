"""Experiment tracking: loggers (MLflow, none) and plots."""

from musicdiff.tracking.base import NullLogger, RunLogger
from musicdiff.tracking.mlflow_logger import MLflowLogger, TrackingError

__all__ = ["MLflowLogger", "NullLogger", "RunLogger", "TrackingError"]
