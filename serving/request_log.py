"""The server's JSON log (``VQA_LOG_FORMAT=json``) and request ids.

Every answer carries an ``X-Request-ID``: the client's own when it sent a usable one (1 to
:data:`MAX_REQUEST_ID_CHARS` visible ASCII characters), else a new ``uuid4`` hex. In JSON mode
each request writes one line, a JSON object, to stderr (:func:`access_fields` names its keys), and
errors logged while answering carry the request's id, so one ``grep`` finds everything about a
request. gunicorn's own lines (start-up, worker restarts) stay text.

Nothing here imports a ``vqa`` module or Flask: the app hands in what it knows.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
import uuid
from datetime import datetime, timezone

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_CHARS = 128
_USABLE_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_ID_CHARS}}}")
LOGGER_NAME = "serving.requests"


def request_id(sent: str | None) -> str:
    """The id of a request: ``sent`` (the client's ``X-Request-ID``) when usable, else a new uuid4 hex."""
    if sent is not None and _USABLE_ID.fullmatch(sent):
        return sent
    return uuid.uuid4().hex


def access_fields(*, request_id: str, method: str, route: str, status: int, seconds: float,
                  model_version, timing: dict) -> dict:
    """The keys of one request's line: id, method, route (the pattern, not the raw path), status,
    latency in ms, the model version (None if unknown), the VGG16 and model batch sizes it joined and
    whether its image's features came from the cache (None where no image went through the cache)."""
    cache = timing.get("cache")
    return {"request_id": request_id, "method": method, "route": route, "status": status,
            "latency_ms": round(1000 * seconds, 3), "model_version": model_version,
            "image_batch": timing.get("image_batch"), "answer_batch": timing.get("answer_batch"),
            "cache_hit": None if cache not in ("hit", "miss") else cache == "hit"}


class JSONFormatter(logging.Formatter):
    """A record as one JSON object: ``time`` (ISO 8601, UTC), ``level``, ``message``, the record's
    ``fields`` (``extra={"fields": {...}}``) and, for an exception, ``error`` (its traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
                "level": record.levelname.lower(), "message": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:
            line["error"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(line, default=str)


class _StderrHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (a test's captured stream included)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging's own rule: a failed log line never fails the request
            self.handleError(record)


def json_logger() -> logging.Logger:
    """The logger whose every line is a JSON object on stderr (set up once per process)."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(JSONFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False  # not again, as text, through the root logger
    return logger
