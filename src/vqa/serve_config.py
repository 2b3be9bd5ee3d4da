"""The server's settings: ``ServeSettings``, the one place where every serving default is written.

Each field carries its default, its help text, its ``vqa serve`` flag, its ``VQA_*`` environment
variable and its check. From them come ``vqa serve``'s flags and their stated defaults
(``vqa.cli``), the environment ``serving/app.py``'s ``create_app`` reads
(:meth:`ServeSettings.from_environ`), the environment ``vqa serve`` hands gunicorn's workers
(:meth:`ServeSettings.environment`), the settings table of docs/serving.md
(:meth:`ServeSettings.markdown_table`) and the demo's serve hint (:meth:`ServeSettings.command_line`).
Adding a knob is one field here. Importing this module imports neither Keras nor TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from vqa import artifacts
from vqa.config import CHECKPOINT, TOP_ANSWERS, flag_name, value_text
from vqa.errors import InputError
from vqa.modeldir import CHECKPOINTS, read_cnn_identity
from vqa.package import is_url, resolve_model
from vqa.repository import check_model_or_repository

MAX_TOP = 50  # most answers one request may ask for
LOG_FORMATS = ("text", "json")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def _setting(default, help: str, *, env: str, flag: str | None = None, low: float | None = None,
             high: float | None = None, above: float | None = None, choices: tuple | None = None,
             rule: str | None = None, required_flag: bool = False, checked_choices: bool = False):
    """A ServeSettings field: its default, help (without the default, which is stated from here),
    environment variable, flag name (default: the field's, dashed), bounds, and the rule its error
    states (default: from the type and bounds). ``choices`` are the flag's; a value from the
    environment is checked here with ``checked_choices``, else where it is used (the checkpoint with the
    model directory, which names it)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "env": env, "flag_name": flag, "low": low, "high": high, "above": above, "choices": choices,
        "rule": rule, "required_flag": required_flag, "checked_choices": checked_choices})


@dataclass(frozen=True)
class ServeSettings:
    """How ``vqa serve`` and ``serving.app:create_app()`` serve a model directory."""

    model_dir: Path | str | None = _setting(None, "model directory written by `vqa train`, a packed file (`vqa "
                                            "pack`), an http(s):// or file:// URL of one ending in "
                                            "`#sha256=<hex>`, or a model repository of numbered versions (REPO/1, "
                                            "REPO/2.vqa, ...: the highest is served, new ones are taken live)",
                                            env="VQA_MODEL_DIR", flag="model", required_flag=True)
    insecure_no_digest: bool = _setting(False, "accept a model URL without `#sha256=<hex>` (local use only: "
                                        "nothing checks what arrives)", env="VQA_INSECURE_NO_DIGEST")
    host: str = _setting("127.0.0.1", "address to bind (0.0.0.0 = all)", env="VQA_HOST")
    port: int = _setting(5000, "port", env="VQA_PORT", low=1, high=65535, rule="in 1..65535")
    workers: int = _setting(1, "gunicorn worker processes, each with its own model, batches and feature "
                            "cache (more where one process cannot keep the cores busy, one per GPU)",
                            env="VQA_WORKERS", low=1, rule="at least 1")
    # Requests of one worker can meet in a batch only on its threads.
    threads: int = _setting(24, "threads per worker sharing its model; only one worker's threads can share "
                            "a batch; threads beyond `--max-queue` answer 503 at once when the worker is full",
                            env="VQA_THREADS", low=1, rule="at least 1")
    timeout: int = _setting(120, "seconds before a silent worker is restarted", env="VQA_TIMEOUT", low=1,
                            rule="at least 1")
    cnn_weights: str = _setting(artifacts.IMAGENET_WEIGHTS, "VGG16 weights the training features used: imagenet, "
                                "a local .h5, or random", env="VQA_CNN_WEIGHTS")
    checkpoint: str = _setting(CHECKPOINT, "weights that answer: last = model.keras (the last epoch), best = "
                               "best.keras (the epoch with the lowest val loss)", env="VQA_CHECKPOINT",
                               choices=tuple(CHECKPOINTS))
    spacy_model: str | None = _setting(None, "spaCy model name or folder (none: auto-detect, as `vqa prepare`)",
                                       env="VQA_SPACY_MODEL")
    # The batching and cache defaults were chosen by measurement on the 2-core CPU
    # (bench/bench_serving.py, docs/serving.md); the library's Predictor defaults to neither.
    max_batch_size: int = _setting(8, "most requests answered by one VGG16 / model call; 1 = no batching",
                                   env="VQA_MAX_BATCH_SIZE", low=1)
    batch_timeout_ms: float = _setting(20.0, "longest wait for a batch to fill while other requests are on "
                                       "their way; a lone request never waits", env="VQA_BATCH_TIMEOUT_MS", low=0)
    feature_cache_mb: float = _setting(64.0, "megabytes of image features remembered per worker, by the "
                                       "SHA-256 of the upload; 0 = off", env="VQA_FEATURE_CACHE_MB", low=0)
    # Bounded waits: two batches of the default size may be inside. A request then waits at most about
    # three batches of 8 (VGG16 on the 2-core CPU: about 1.4 s each, bench/results_serving.json), 4 s;
    # the timeout allows twice that and more, for a machine busy with other work.
    max_queue: int = _setting(16, "most requests inside one worker at once (admitted, not yet answered); one "
                              "more is answered 503 with Retry-After at once; 0 = no bound", env="VQA_MAX_QUEUE",
                              low=0)
    request_timeout_ms: float = _setting(10000.0, "longest a request waits for its batches, in milliseconds; "
                                         "then it is dropped and answered 503 with Retry-After; 0 = no bound",
                                         env="VQA_REQUEST_TIMEOUT_MS", low=0)
    log_format: str = _setting("text", "request log: text (gunicorn's lines only) or json (one JSON object per "
                               "request on stderr, with its X-Request-ID)", env="VQA_LOG_FORMAT",
                               choices=LOG_FORMATS, checked_choices=True)
    max_upload_mb: float = _setting(10.0, "largest request body in megabytes; a larger one is answered 413",
                                    env="VQA_MAX_UPLOAD_MB", above=0, rule="a positive number of megabytes")
    top_k: int = _setting(TOP_ANSWERS, "answers returned when a request gives no `top`", env="VQA_TOP_K", low=1,
                          high=MAX_TOP)
    background_load: bool = _setting(False, "load the model on a background thread, so that /healthz and "
                                     "/readyz answer (503, loading) meanwhile", env="VQA_BACKGROUND_LOAD")
    poll_seconds: float = _setting(2.0, "with a model repository (`--model REPO` holding versions 1, 2, ...): "
                                   "seconds between two looks for a new or removed version", env="VQA_POLL_SECONDS",
                                   above=0, rule="a positive number of seconds")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, config: Mapping | None = None,
                     flags: Mapping | None = None) -> "ServeSettings":
        """The settings from, in order of precedence, ``flags``, ``config``, ``environ``, the defaults.

        Args:
            environ: the environment (``VQA_*`` names; a blank value counts as unset).
            config: values by ``VQA_*`` name (the Flask test mapping); a present key counts, None included.
            flags: values by field name (parsed ``vqa serve`` flags); None counts as not given.
        Raises:
            InputError: naming the first bad value by its flag (``--workers``) or variable (``VQA_TOP_K``).
        """
        config, flags, values = config or {}, flags or {}, {}
        for field in dataclasses.fields(cls):
            env = field.metadata["env"]
            if flags.get(field.name) is not None:
                name, value = flag_name(field), flags[field.name]
            elif env in config:
                name, value = env, config[env]
            elif str(environ.get(env, "")).strip():
                name, value = env, environ[env]
            else:
                continue
            values[field.name] = parse_setting(field, value, name)
        return cls(**values)

    def with_files_checked(self) -> "ServeSettings":
        """These settings with the model resolved (a packed file or URL opened into the cache), its
        directory (or a model repository's highest complete version) checked from file names and made
        absolute, and a VGG16 weights file checked, made absolute and paired with the model's
        (`vqa.features.check_cnn_weights`): a bad one stops `vqa serve` before any worker starts. InputError or
        ResourceError naming the problem. (A packed version in a repository is paired when a worker loads it.)"""
        from vqa.features import check_cnn_weights, local_weights_file  # h5py: only `vqa serve` needs it

        model_dir = self.resolved_model_dir()
        version = check_model_or_repository(model_dir, checkpoint=self.checkpoint)
        cnn_weights = self.cnn_weights
        if cnn_weights not in artifacts.NAMED_CNN_WEIGHTS:
            cnn_weights = str(local_weights_file(cnn_weights).resolve())
        served = model_dir if version is None else version.path
        if served.is_dir():
            check_cnn_weights(read_cnn_identity(served), cnn_weights, model=served)
        return dataclasses.replace(self, model_dir=model_dir.resolve(), cnn_weights=cnn_weights)

    def resolved_model_dir(self) -> Path:
        """The model directory that ``model_dir`` names: itself, or a packed file or URL opened into the cache
        (``vqa.package.resolve_model``). InputError for none or a bad packed file, URL or digest."""
        if self.model_dir is None:
            raise InputError("no model directory; pass --model (or set VQA_MODEL_DIR)")
        return resolve_model(self.model_dir, insecure_no_digest=self.insecure_no_digest)

    def environment(self) -> dict[str, str]:
        """Every set field as its ``VQA_*`` variable, as :meth:`from_environ` reads it back."""
        return {field.metadata["env"]: _text(getattr(self, field.name)) for field in dataclasses.fields(self)
                if getattr(self, field.name) is not None}

    def flask_config(self) -> dict:
        """Every field by its ``VQA_*`` name, parsed (what ``create_app`` puts in ``app.config``)."""
        return {field.metadata["env"]: getattr(self, field.name) for field in dataclasses.fields(self)}

    def command_line(self) -> str:
        """The ``vqa serve`` command that gives these settings (only the flags that differ from the defaults)."""
        words = ["vqa", "serve"]
        for field in dataclasses.fields(self):
            value, flag = getattr(self, field.name), flag_name(field)
            if value != field.default or field.metadata["required_flag"]:
                words += [flag if value else "--no-" + flag[2:]] if isinstance(value, bool) else [flag, _text(value)]
        return shlex.join(words)

    @property
    def url(self) -> str:
        """Where the server answers, e.g. ``http://127.0.0.1:5000``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def markdown_table(cls) -> str:
        """The settings as a markdown table (setting, flag, variable, default, meaning) for the docs."""
        rows = ["| setting | flag | environment | default | meaning |", "|---|---|---|---|---|"]
        for field in dataclasses.fields(cls):
            default = "required" if field.metadata["required_flag"] else value_text(field.default)
            rows.append(f"| `{field.name}` | `{flag_name(field)}` | `{field.metadata['env']}` | {default} | "
                        f"{field.metadata['help']} |")
        return "\n".join(rows)


def _text(value) -> str:
    """A value as its flag or environment text (20.0 -> "20", True -> "1")."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_setting(field: dataclasses.Field, value, name: str):
    """``value`` (text or a value) as the field's type, checked; InputError naming ``name`` if not."""
    kind = _kind(field)
    if field.default is None and (value is None or not str(value).strip()):
        return None  # an optional setting left blank
    parsed = _parse(kind, value)
    meta = field.metadata
    ok = parsed is not None and (not isinstance(parsed, float) or math.isfinite(parsed))
    ok = ok and not (meta["checked_choices"] and parsed not in meta["choices"])
    for bound, holds in ((meta["low"], lambda low: parsed >= low), (meta["high"], lambda high: parsed <= high),
                         (meta["above"], lambda above: parsed > above)):
        ok = ok and (bound is None or holds(bound))
    if not ok:
        raise InputError(f"{name} must be {_rule(field, kind)}, got {value!r}")
    return parsed


def _kind(field: dataclasses.Field) -> type:
    """The field's type, from its annotation without ``| None``."""
    annotation = str(field.type)
    for kind in (bool, int, float, Path):
        if annotation.startswith(kind.__name__):
            return kind
    return str


def _parse(kind: type, value):
    """``value`` as ``kind`` (from its text, so that 2.5 is no int), or None."""
    if kind is not str and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    if not text:
        return None
    if kind is bool:
        return True if text.lower() in TRUE_WORDS else False if text.lower() in FALSE_WORDS else None
    if kind is Path and is_url(text):
        return text  # a model URL: a Path would fold its "//"
    try:
        return kind(text)
    except ValueError:
        return None


def _rule(field: dataclasses.Field, kind: type) -> str:
    """What a good value is, in words: the field's own rule, else from its type, choices and bounds."""
    meta = field.metadata
    if meta["rule"]:
        return meta["rule"]
    if kind is bool or meta["checked_choices"]:
        return "one of " + ", ".join(meta["choices"] if meta["checked_choices"] else TRUE_WORDS + FALSE_WORDS)
    what = "an integer" if kind is int else "a number" if kind is float else "a non-empty value"
    if meta["high"] is not None:
        return f"{what} in {meta['low']:g}..{meta['high']:g}"
    return f"{what} >= {meta['low']:g}" if meta["low"] is not None else what
