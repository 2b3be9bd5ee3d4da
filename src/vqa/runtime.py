"""Process-wide set-up shared by the CLI and the serving app."""

from __future__ import annotations

import importlib.util
import os
import sys


def quiet_tensorflow() -> None:
    """Import TensorFlow with its C++ start-up chatter kept off the terminal.

    TensorFlow 2.21 prints CUDA-probing and oneDNN notices through absl before
    TF_CPP_MIN_LOG_LEVEL is read, so stderr is pointed at /dev/null for the
    import only; Python errors raised by the import still reach the terminal.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
