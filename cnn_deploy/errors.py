"""The one exception family for errors a user can cause.

The CLI catches :class:`CnnDeployError` once, prints its message and exits non-zero;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class CnnDeployError(Exception):
    """An error the user can fix; its message says how."""


class DataError(CnnDeployError):
    """A dataset is missing, truncated or not what it claims to be."""


class SpecError(CnnDeployError):
    """A network name or specification that cannot be built."""


class ModelError(CnnDeployError):
    """A checkpoint or ONNX file that is missing, corrupt or not usable."""


class BackendError(CnnDeployError):
    """A backend that is unknown, not installed or cannot run here."""


class BenchError(CnnDeployError):
    """A benchmark that cannot be run as asked (batch too large, bad options)."""


class ResultsError(CnnDeployError):
    """A results file that cannot be written or read."""


class EngineError(CnnDeployError):
    """A TensorRT engine that cannot be built, or cannot run on this GPU or runtime."""


class StreamError(CnnDeployError):
    """A frame source, tiling or output of `cnndeploy stream` that cannot work as asked."""


class PredictError(CnnDeployError):
    """A latency model that cannot be fitted or used, or a budget no network can meet."""
