"""`vqa serve`: gunicorn on ``serving.app:create_app()``, with the settings handed over in the environment.

:func:`serve` checks the settings (one-line errors, before any worker loads a model), then
replaces this process with gunicorn, so that signals (Ctrl-C, SIGTERM) reach it directly.
Each worker's ``create_app`` reads the settings back with ``ServeSettings.from_environ``.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys
import tempfile
from collections.abc import Mapping

from vqa.errors import VQAError
from vqa.serve_config import ServeSettings

SERVING_APP = "serving.app:create_app()"


def serve(settings: ServeSettings) -> int:
    """Check ``settings``, then run gunicorn on the app in place of this process (does not return).

    Raises:
        VQAError: a bad model directory or VGG16 weights file, or gunicorn is not installed.
    """
    settings = settings.with_files_checked()
    if importlib.util.find_spec("gunicorn") is None:
        raise VQAError("gunicorn is not installed; pip install gunicorn")
    argv = gunicorn_argv(settings)
    env = worker_environment(settings, os.environ)
    print(f"vqa serve: {shlex.join(['python', *argv[1:]])} (model {settings.model_dir}, "
          f"checkpoint {settings.checkpoint})", file=sys.stderr, flush=True)
    os.execve(sys.executable, argv, env)
    return 0  # not reached


def gunicorn_argv(settings: ServeSettings) -> list[str]:
    """The gunicorn command line `vqa serve` runs: the documented one, with this interpreter."""
    host = settings.host
    bind = f"[{host}]:{settings.port}" if ":" in host else f"{host}:{settings.port}"
    return [sys.executable, "-m", "gunicorn", "-w", str(settings.workers), "--threads", str(settings.threads),
            "-b", bind, "--timeout", str(settings.timeout), SERVING_APP]


def worker_environment(settings: ServeSettings, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` plus every setting as its ``VQA_*`` variable, and a folder where the workers'
    Prometheus figures meet (serving/metrics.py adds them up for /metrics)."""
    env = {**environ, **settings.environment()}
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="vqa-metrics-")
    return env
