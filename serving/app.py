"""The VQA REST API: a Flask app factory over :class:`vqa.predict.Predictor`.

Routes: ``GET /`` (an offline HTML page to try it), ``POST /predict`` (multipart
``image`` file + ``question`` text, optional ``top``; the tutorial's ``ques`` field
name is accepted for ``question``), ``GET /healthz`` (liveness: the process
answers), ``GET /readyz`` (readiness: 503 with a reason until the model is loaded
and warmed up, or after it failed to load) and ``GET /metrics`` (Prometheus text). With a stacked
attention network (``vqa train san``), ``attention=1`` adds each layer's attention
over the S x S image grid to the answer, and the page draws the last one.
Every error answers JSON ``{"error": "..."}`` with its 4xx status, or 503 with ``Retry-After``
when the model is not ready, too many requests are inside the worker (``VQA_MAX_QUEUE``) or a
request waited ``VQA_REQUEST_TIMEOUT_MS`` for its batch (:class:`vqa.errors.Overloaded`).
``GET /openapi.json`` describes the API (``serving/openapi.py``). Every answer carries an
``X-Request-ID`` (the client's, or a new one); ``VQA_LOG_FORMAT=json`` logs one JSON line per
request and every error with it (``serving/request_log.py``).

Settings come from, in order of precedence: the ``config`` mapping given to
:func:`create_app`, then the environment, then the defaults. They are the fields of
:class:`vqa.serve_config.ServeSettings` (``VQA_MODEL_DIR``, ``VQA_CNN_WEIGHTS``,
``VQA_CHECKPOINT``, ``VQA_MAX_UPLOAD_MB``, ``VQA_TOP_K``, ``VQA_SPACY_MODEL``, the batching
and cache knobs, ``VQA_BACKGROUND_LOAD``, ...), which holds each one's default, meaning and
check; ``ServeSettings.markdown_table()`` lists them. ``VQA_MODEL_DIR`` is required. With
``VQA_BACKGROUND_LOAD`` the model loads on a background thread, so that ``/healthz`` and
``/readyz`` answer (503, "loading") meanwhile; otherwise the worker starts once it is loaded.

Every response of ``POST /predict`` carries a ``Server-Timing`` header: whether the image's
features came from the cache, the time of each stage and the sizes of the batches it joined.

``VQA_MODEL_DIR`` may name a model repository of numbered versions (``vqa.repository``): the
highest complete one is served and a watcher thread per worker swaps in newer ones, or rolls back
(``serving/versions.py``). Every answer carries ``X-Model-Version``, the version that answered (``1``
for a plain model directory, packed file or URL); /healthz, /readyz, ``/`` and /metrics name it too.

The config mapping may also carry ``VQA_PREDICTOR``, an already built Predictor
(tests and embedding applications share one instead of loading another; the
batching and cache settings are then its own).

Production: ``vqa serve --model DIR`` (which runs gunicorn on this factory), or
``gunicorn -w 2 -b 0.0.0.0:5000 'serving.app:create_app()'``; both work from any
directory once the package is installed (``serving`` ships in the wheel beside
``vqa``). Each worker process loads its own Predictor once; one Predictor is safe
to share between threads (``--threads``), see ``vqa.predict``, and only threads of
one worker can share a batch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import threading
import time
from importlib import metadata

import numpy as np
from flask import Blueprint, Flask, Response, current_app, g, jsonify, render_template, request
from werkzeug.exceptions import BadRequest, HTTPException, ServiceUnavailable

from serving import openapi, request_log
from serving.metrics import Metrics
from serving.versions import PLAIN_VERSION, LiveModel, VersionWatcher
from vqa import __version__
from vqa.errors import InputError, Overloaded, VQAError
from vqa.predict import Predictor, answer_sentence
from vqa.repository import Version, is_repository
from vqa.serve_config import MAX_TOP, ServeSettings

logger = logging.getLogger(__name__)

# The tutorial's app.py read the question from a form field named "ques".
QUESTION_FIELDS = ("question", "ques")
MAX_QUESTION_CHARS = 300
# The ``attention`` form field: these values (any case) turn it on or off; anything else is a 400.
ATTENTION_ON = ("1", "true", "yes")
ATTENTION_OFF = ("0", "false", "no")
ATTENTION_DECIMALS = 6  # enough for the maps to sum to 1 within 1e-5, without float32 noise in the JSON
READINESS_KEY = "vqa_readiness"
METRICS_KEY = "vqa_metrics"
SETTINGS_KEY = "vqa_settings"
LIVE_KEY = "vqa_live_model"  # serving.versions.LiveModel: the served Predictor and its version
WATCHER_KEY = "vqa_version_watcher"  # serving.versions.VersionWatcher, with a model repository only
VERSION_HEADER = "X-Model-Version"
# Server-Timing entries: (timing key, metric name); durations in milliseconds
TIMING_STAGES = (("decode", "decode"), ("image_queue", "image-queue"), ("vgg16", "vgg16"), ("question", "question"),
                 ("answer_queue", "answer-queue"), ("model", "model"))

bp = Blueprint("vqa", __name__)


def create_app(config: dict | None = None) -> Flask:
    """Build the app: settings (defaults, environment, ``config``), one warmed-up Predictor, routes.

    Args:
        config: Flask settings overriding the environment, e.g. ``{"VQA_MODEL_DIR": "models/mlp"}``.
    Returns:
        The Flask application (debug off).
    Raises:
        VQAError: a setting is missing or invalid, or (unless ``VQA_BACKGROUND_LOAD``) the model cannot
            be loaded.
    """
    settings = ServeSettings.from_environ(os.environ, config=config)
    app = Flask(__name__)
    app.config.from_mapping(config or {})
    app.config.update(settings.flask_config(), DEBUG=False, PROPAGATE_EXCEPTIONS=False,
                      MAX_CONTENT_LENGTH=int(settings.max_upload_mb * 1024 * 1024))
    app.extensions[SETTINGS_KEY] = settings
    app.extensions[READINESS_KEY] = Readiness()
    app.extensions[METRICS_KEY] = Metrics()
    app.extensions[LIVE_KEY] = LiveModel()
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Overloaded, _overloaded)
    app.register_error_handler(Exception, _unexpected_error)
    app.before_request(_start_timer)
    app.after_request(_count_request)
    app.after_request(_tag_version)
    app.after_request(_log_request)  # after_request functions run last-registered first: this one first
    app.teardown_request(_release_model)
    if settings.background_load:
        _check_model_setting(app.config)  # a missing setting still stops the start-up
        threading.Thread(target=_load_in_background, args=(app, settings), name="vqa-load", daemon=True).start()
    else:
        _load(app, settings)
    return app


def _load(app: Flask, settings: ServeSettings) -> None:
    """Build (or take) the Predictor, or a model repository's highest version, report to this app's metrics,
    warm it up and serve it, then mark the app ready."""
    predictor = app.config.get("VQA_PREDICTOR")
    model_dir = None if predictor is not None else _model_dir(app.config, settings)
    if model_dir is not None and is_repository(model_dir):
        _serve_repository(app, settings, model_dir)
    else:
        predictor = predictor or _load_predictor(settings, model_dir)
        _warm_up(app, predictor)
        _serve(app, settings, predictor, PLAIN_VERSION)
    app.extensions[READINESS_KEY].ready()
    _logger(app).warning("VQA model is loaded and ready to test out via your new API!")


def _warm_up(app: Flask, predictor: Predictor) -> None:
    """Report to this app's metrics, then run the warm-up prediction."""
    predictor.set_observer(app.extensions[METRICS_KEY])
    predictor.warm_up()


def _serve(app: Flask, settings: ServeSettings, predictor: Predictor, version: str) -> None:
    """Answer new requests with the warmed-up ``predictor`` as ``version``; publish it in /metrics."""
    app.extensions[LIVE_KEY].serve(predictor, version)
    metrics = app.extensions[METRICS_KEY]
    metrics.model_info(**predictor.info(), max_batch_size=settings.max_batch_size,
                       feature_cache_mb=settings.feature_cache_mb)
    metrics.model_version(version)


def _load_in_background(app: Flask, settings: ServeSettings) -> None:
    """:func:`_load` on a thread: a failure makes /readyz answer 503 with the reason."""
    try:
        _load(app, settings)
    except Exception as error:  # noqa: BLE001 - reported by /readyz and the log, the worker stays up
        _logger(app).exception("the VQA model failed to load")
        app.extensions[READINESS_KEY].failed(f"the model failed to load: {error}")


class Readiness:
    """Whether the app can answer: ``loading`` until the warm-up prediction is done, then ``ready`` or ``failed``."""

    def __init__(self):
        self.state, self.reason = "loading", "the model is loading"

    def ready(self) -> None:
        self.state, self.reason = "ready", ""

    def failed(self, reason: str) -> None:
        self.state, self.reason = "failed", reason


def _check_model_setting(config) -> None:
    if not config.get("VQA_PREDICTOR") and not config.get("VQA_MODEL_DIR"):
        raise VQAError("VQA_MODEL_DIR is not set; export VQA_MODEL_DIR=path/to/model_dir (written by 'vqa train')")


def _model_dir(config, settings: ServeSettings):
    """The model directory (or repository) the settings name, a packed file or URL opened into the cache."""
    _check_model_setting(config)
    return settings.resolved_model_dir()


def _load_predictor(settings: ServeSettings, model_dir, *, images=None) -> Predictor:
    """The Predictor the settings describe over ``model_dir``, sharing ``images`` when it fits."""
    return Predictor(model_dir, cnn_weights=settings.cnn_weights, checkpoint=settings.checkpoint,
                     spacy_model=settings.spacy_model, max_batch_size=settings.max_batch_size,
                     batch_timeout_ms=settings.batch_timeout_ms, feature_cache_mb=settings.feature_cache_mb,
                     max_queue=settings.max_queue, request_timeout_ms=settings.request_timeout_ms, images=images)


# --------------------------------------------------------------------------- model repository: live versions
def _serve_repository(app: Flask, settings: ServeSettings, repo) -> None:
    """Serve ``repo``'s highest version that loads, then follow its updates on a watcher thread."""
    live = app.extensions[LIVE_KEY]

    def load(version: Version) -> Predictor:
        """A version's Predictor beside the served one (sharing its VGG16 and feature cache when they fit)."""
        served = live.predictor
        model_dir = dataclasses.replace(settings, model_dir=version.path).resolved_model_dir()
        predictor = _load_predictor(settings, model_dir, images=served.images if served is not None else None)
        try:
            _warm_up(app, predictor)
        except Exception:
            predictor.close(keep_images=served is not None and predictor.images is served.images)
            raise
        return predictor

    watcher = VersionWatcher(repo, live, load=load, serve=lambda predictor, version: _serve(
        app, settings, predictor, version), checkpoint=settings.checkpoint, poll_seconds=settings.poll_seconds)
    watcher.serve_first()
    app.extensions[WATCHER_KEY] = watcher
    watcher.start()


def _tag_version(response):
    """Name the model version that answered (or, for requests that used none, the one serving) on every answer."""
    version = _model_version()
    if version is not None:
        response.headers[VERSION_HEADER] = version
    return response


def _release_model(error=None) -> None:
    """Give back the request's lease on its Predictor (see serving.versions.LiveModel)."""
    served = g.pop("vqa_served", None)
    if served is not None:
        current_app.extensions[LIVE_KEY].release(served)


def _parse_top(value) -> int | None:
    """``value`` as an int in 1..MAX_TOP, or None when it is not one."""
    try:
        top = int(value)
    except (TypeError, ValueError):
        return None
    return top if 1 <= top <= MAX_TOP else None


# --------------------------------------------------------------------------- routes
def _ready_predictor() -> Predictor:
    """The app's Predictor, or 503 (ServiceUnavailable) saying why it cannot answer yet."""
    readiness = current_app.extensions[READINESS_KEY]
    if readiness.state != "ready":
        raise ServiceUnavailable(f"not ready: {readiness.reason}; retry shortly (GET /readyz)")
    if "vqa_served" not in g:  # one lease per request: the version it started on answers it
        g.vqa_served = current_app.extensions[LIVE_KEY].acquire()
    return g.vqa_served.predictor


@bp.get("/")
def index():
    """The upload page (self-contained: inline CSS and JS, no network)."""
    info = _ready_predictor().info()
    return render_template("index.html", model=info["model"], version=g.vqa_served.version,
                           top_k=current_app.config["VQA_TOP_K"], max_top=MAX_TOP,
                           max_question_chars=MAX_QUESTION_CHARS,
                           max_upload_mb=current_app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024),
                           attention=info["attention"], image_size=info["image_size"])


@bp.get("/healthz")
def healthz():
    """Liveness (200 while the process answers) and what is loaded: model kind, checkpoint, answer count,
    image layout, attention, versions; ``"model_loaded": false`` while the model loads."""
    readiness = current_app.extensions[READINESS_KEY]
    if readiness.state != "ready":
        return jsonify(status="ok", model_loaded=False, ready=False, state=readiness.state, reason=readiness.reason)
    served = current_app.extensions[LIVE_KEY].current  # the Predictor and its version, read together
    info = served.predictor.info()
    versions = {**info["versions"], "flask": metadata.version("flask"), "python": platform.python_version()}
    return jsonify(status="ok", model_loaded=True, ready=True, model=info["model"], model_version=served.version,
                   num_answers=info["num_answers"],
                   vocabulary_size=info["vocabulary_size"], cnn_weights=info["cnn_weights"],
                   checkpoint=info["checkpoint"], image_layout=info["image_layout"], image_size=info["image_size"],
                   attention=info["attention"], grid_size=info["grid_size"], versions=versions)


@bp.get("/readyz")
def readyz():
    """Readiness: 200 once the model is loaded and warmed up; 503 with the reason before, or after a failure.
    Once ready it names the serving ``model_version`` and, with a model repository, each newer version ``refused``
    (version -> reason) while it is there."""
    readiness = current_app.extensions[READINESS_KEY]
    body = {"status": readiness.state, **({"reason": readiness.reason} if readiness.reason else {})}
    live = current_app.extensions[LIVE_KEY]
    if readiness.state == "ready":
        body |= {"model_version": live.version, **({"refused": live.refused} if live.refused else {})}
    return jsonify(body), 200 if readiness.state == "ready" else 503


@bp.get("/metrics")
def metrics():
    """Prometheus text format: requests, latency, batch sizes, cache hits and misses, queue depth, the model."""
    payload, content_type = current_app.extensions[METRICS_KEY].exposition()
    return Response(payload, content_type=content_type)


@bp.post("/predict")
def predict():
    """Multipart ``image`` + ``question`` or ``ques`` (+ ``top``) -> ``{"question", "answers", "message"}``.

    With ``attention=1`` (a SAN only) the answer also carries ``"attention"``, L lists of
    S*S floats (each layer's map, row-major, summing to 1), and ``"grid_size"`` S.
    """
    predictor = _ready_predictor()
    image, question, top = _read_request()
    with_attention = _read_attention(request.form.get("attention"), predictor)
    top = min(top, len(predictor.answerer.answers))
    timing: dict = {}
    try:
        if with_attention:
            answers, attention = predictor.ask_with_attention(image, question, top=top, timing=timing)
        else:
            answers = predictor.ask(image, question, top=top, timing=timing)
    except InputError as error:
        raise BadRequest(str(error)) from None
    body = {"question": question,
            "answers": [{"answer": answer, "probability": probability} for answer, probability in answers],
            "message": answer_sentence(question, *answers[0])}
    if with_attention:
        body.update(attention=[np.round(layer.ravel().astype(np.float64), ATTENTION_DECIMALS).tolist()
                               for layer in attention], grid_size=int(attention.shape[-1]))
    g.vqa_timing = timing  # for the request's log line
    response = jsonify(body)
    response.headers["Server-Timing"] = server_timing(timing, time.perf_counter() - g.vqa_started)
    return response


@bp.get("/openapi.json")
def openapi_json():
    """The OpenAPI 3.1 document of this API, from the limits this app checks requests against."""
    return jsonify(openapi.document(
        version=__version__, question_fields=QUESTION_FIELDS,
        max_question_chars=MAX_QUESTION_CHARS, max_top=MAX_TOP, top_k=current_app.config["VQA_TOP_K"],
        attention_words=ATTENTION_ON + ATTENTION_OFF,
        max_upload_mb=current_app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024)))


def server_timing(timing: dict, total_seconds: float) -> str:
    """The ``Server-Timing`` header of one answer: cache hit or miss, each stage's milliseconds, batch sizes.

    e.g. ``cache;desc="miss", decode;dur=4.1, image-queue;dur=0.2, vgg16;dur=181.0;desc="batch 3", ...``
    """
    entries = [f'cache;desc="{timing.get("cache", "off")}"']
    batches = {"vgg16": timing.get("image_batch"), "model": timing.get("answer_batch")}
    for key, name in TIMING_STAGES:
        if key in timing:
            batch = f';desc="batch {batches[name]}"' if batches.get(name) else ""
            entries.append(f"{name};dur={1000 * timing[key]:.1f}{batch}")
    entries.append(f"total;dur={1000 * total_seconds:.1f}")
    return ", ".join(entries)


def _read_request() -> tuple[bytes, str, int]:
    """The upload's bytes, the stripped question and ``top``; BadRequest (400) naming the problem."""
    upload = request.files.get("image")
    if upload is None:
        raise BadRequest("missing 'image': send the picture as a multipart file field named image")
    image = upload.read()
    if not image:
        raise BadRequest("'image' is empty; send a JPEG or PNG file")
    question = next((request.form[name] for name in QUESTION_FIELDS if name in request.form), None)
    if question is None:
        raise BadRequest("missing 'question': send it as a form field named question (or the tutorial's ques)")
    question = question.strip()
    if not question or len(question) > MAX_QUESTION_CHARS:
        raise BadRequest(f"'question' must have 1 to {MAX_QUESTION_CHARS} characters, got {len(question)}")
    return image, question, _read_top(request.form.get("top"))


def _read_top(value: str | None) -> int:
    """The ``top`` form field (default VQA_TOP_K) as an int in 1..50."""
    if value is None or not value.strip():
        return current_app.config["VQA_TOP_K"]
    top = _parse_top(value)
    if top is None:
        raise BadRequest(f"'top' must be an integer in 1..{MAX_TOP}, got {value[:20]!r}")
    return top


def _read_attention(value: str | None, predictor: Predictor) -> bool:
    """The ``attention`` form field as a bool (absent or blank = off), or BadRequest (400).

    A value outside ATTENTION_ON / ATTENTION_OFF, or attention asked of a model without it, is a 400.
    """
    if value is None or not value.strip():
        return False
    flag = value.strip().lower()
    if flag not in ATTENTION_ON + ATTENTION_OFF:
        raise BadRequest(f"'attention' must be one of {', '.join(ATTENTION_ON + ATTENTION_OFF)}, got {value[:20]!r}")
    if flag in ATTENTION_ON and not predictor.answerer.has_attention:
        raise BadRequest(f"this {predictor.info()['model']} model has no attention maps; leave out 'attention', "
                         "or serve a stacked attention network (train one with 'vqa train san')")
    return flag in ATTENTION_ON


# --------------------------------------------------------------------------- request metrics
def _start_timer() -> None:
    g.vqa_started = time.perf_counter()
    g.vqa_request_id = request_log.request_id(request.headers.get(request_log.REQUEST_ID_HEADER))


def _count_request(response):
    """Count every answered request (errors too) by its route pattern, never by its raw path."""
    seconds = time.perf_counter() - g.get("vqa_started", time.perf_counter())
    current_app.extensions[METRICS_KEY].request(_route(), request.method, response.status_code, seconds)
    return response


# --------------------------------------------------------------------------- request ids, the JSON log
def _json_log(app: Flask) -> bool:
    return app.config.get("VQA_LOG_FORMAT") == "json"


def _logger(app: Flask) -> logging.Logger:
    """Where the app logs: the JSON logger with ``VQA_LOG_FORMAT=json``, else this module's (text)."""
    return request_log.json_logger() if _json_log(app) else logger


def _log_request(response):
    """Echo the request id; with the JSON log, write the request's line."""
    response.headers[request_log.REQUEST_ID_HEADER] = g.vqa_request_id
    if _json_log(current_app):
        fields = request_log.access_fields(
            request_id=g.vqa_request_id, method=request.method, route=_route(), status=response.status_code,
            seconds=time.perf_counter() - g.vqa_started, model_version=_model_version(),
            timing=g.get("vqa_timing", {}))
        request_log.json_logger().info("%s %s %s", request.method, fields["route"], response.status_code,
                                       extra={"fields": fields})
    return response


def _route() -> str:
    """The matched route's pattern, never the raw path (which a client chooses)."""
    return request.url_rule.rule if request.url_rule is not None else "unmatched"


def _model_version() -> str | None:
    """The version that answered this request, else the one serving now; None before one serves."""
    served = g.get("vqa_served")
    return served.version if served is not None else current_app.extensions[LIVE_KEY].version


# --------------------------------------------------------------------------- errors
def _http_error(error: HTTPException):
    """Every HTTP error (400, 404, 405, 413, ...) as JSON ``{"error": ...}``."""
    description = error.description or error.name
    if error.code == 413:
        limit = current_app.config["MAX_CONTENT_LENGTH"] / (1024 * 1024)
        description = f"upload over the {limit:g} MB limit (VQA_MAX_UPLOAD_MB); send a smaller image"
    response = jsonify(error=description)
    response.status_code = error.code or 500
    if getattr(error, "valid_methods", None):
        response.headers["Allow"] = ", ".join(error.valid_methods)
    if error.code == 503:
        response.headers["Retry-After"] = "5"
    return response


def _overloaded(error: Overloaded):
    """Too many requests inside, or one waited past its deadline: 503 with Retry-After."""
    response = jsonify(error=str(error))
    response.status_code = 503
    response.headers["Retry-After"] = str(error.retry_after)
    return response


def _unexpected_error(error: Exception):
    """A bug, not bad input: log it (with the request id) and answer JSON 500 without killing the worker."""
    _logger(current_app).exception("unexpected error while serving %s %s", request.method, request.path,
                                   extra={"fields": {"request_id": g.get("vqa_request_id"),
                                                     "method": request.method, "route": _route()}})
    return jsonify(error="internal error; see the server log"), 500
