"""The OpenAPI 3.1 description of the VQA REST API, served at ``GET /openapi.json``.

Built on each call from the values the app itself checks requests against (field names, the
longest question, ``top``'s range, the ``attention`` words, the upload limit), which
``serving/app.py`` hands in, so the document cannot drift from the code. Its schemas are
JSON Schema 2020-12 (OpenAPI 3.1's dialect): a client generator and ``jsonschema`` read them as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

OPENAPI_VERSION = "3.1.0"
ERROR_STATUSES = {"400": "Bad input: a missing or malformed field, an unreadable image; `error` names it",
                  "413": "The body is over the upload limit (VQA_MAX_UPLOAD_MB)",
                  "503": "Not ready (loading, or failed to load), too many requests waiting (max_queue), or "
                         "the request timed out waiting for its batch (request_timeout_ms); see Retry-After"}


def document(*, version: str, question_fields: Sequence[str], max_question_chars: int, max_top: int, top_k: int,
             attention_words: Sequence[str], max_upload_mb: float) -> dict:
    """The OpenAPI document (a JSON-ready dict) of the routes ``/predict``, ``/healthz``, ``/readyz``,
    ``/metrics`` and ``/openapi.json``, with the given limits."""
    question = {"type": "string", "minLength": 1, "maxLength": max_question_chars,
                "description": "the question (surrounding blanks are stripped first)"}
    form = {"type": "object", "required": ["image"],
            "properties": {"image": {"type": "string", "contentMediaType": "application/octet-stream",
                                     "description": f"a JPEG or PNG file, the whole body at most {max_upload_mb:g} MB"},
                           **{name: {**question, "description": f"the question{' (the tutorial spelling)' if i else ''}"
                                     f"; give {' or '.join(question_fields)}, the first wins"}
                              for i, name in enumerate(question_fields)},
                           "top": {"type": "integer", "minimum": 1, "maximum": max_top, "default": top_k,
                                   "description": "answers to return (at most the model's answer count)"},
                           "attention": {"type": "string", "pattern": _any_case(attention_words),
                                         "description": f"one of {', '.join(attention_words)} (any case; blank = "
                                                        f"off); on: add a stacked attention network's maps"}}}
    return {"openapi": OPENAPI_VERSION,
            "info": {"title": "VQA-Keras", "version": version,
                     "description": "Visual question answering: an image and a question in, ranked answers out."},
            "paths": {"/predict": {"post": _predict(form)},
                      "/healthz": {"get": _json_get("Liveness and what is loaded", "Health")},
                      "/readyz": {"get": {**_json_get("Readiness: 200 once the model is loaded and warm", "Ready"),
                                          "responses": {"200": _json("Ready", "ready"),
                                                        "503": _json("Ready", "loading, or failed to load")}}},
                      "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {
                          "description": "Prometheus text format", "content": {"text/plain": {
                              "schema": {"type": "string"}}}}}}},
                      "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {
                          "description": "OpenAPI 3.1", "content": {"application/json": {
                              "schema": {"type": "object"}}}}}}}},
            "components": {"schemas": _schemas()}}


def _any_case(words: Sequence[str]) -> str:
    """A regular expression (ECMA, no flags) for any of ``words`` in any case, blanks around, or nothing."""
    spelled = ["".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word) for word in words]
    return rf"^\s*({'|'.join(spelled)})?\s*$"


def _predict(form: dict) -> dict:
    errors = {status: _json("Error", description) for status, description in ERROR_STATUSES.items()}
    errors["503"]["headers"] = {"Retry-After": {"description": "seconds to wait before trying again",
                                                "schema": {"type": "integer", "minimum": 1}}}
    return {"summary": "Answer a question about an image",
            "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": form}}},
            "responses": {"200": _json("Answer", "the answers, most probable first"), **errors}}


def _json_get(summary: str, schema: str) -> dict:
    return {"summary": summary, "responses": {"200": _json(schema, summary)}}


def _json(schema: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _schemas() -> dict:
    probability = {"type": "number", "minimum": 0, "maximum": 1}
    return {
        "Answer": {"type": "object", "required": ["question", "answers", "message"], "additionalProperties": False,
                   "properties": {
                       "question": {"type": "string"},
                       "answers": {"type": "array", "minItems": 1, "items": {
                           "type": "object", "required": ["answer", "probability"], "additionalProperties": False,
                           "properties": {"answer": {"type": "string"}, "probability": probability}}},
                       "message": {"type": "string", "description": "the top answer as a sentence"},
                       "attention": {"type": "array", "description": "with attention=1: each layer's map over the "
                                     "S x S grid, row-major, summing to 1",
                                     "items": {"type": "array", "items": probability}},
                       "grid_size": {"type": "integer", "minimum": 1, "description": "S"}}},
        "Error": {"type": "object", "required": ["error"], "additionalProperties": False,
                  "properties": {"error": {"type": "string", "description": "what is wrong, in one line"}}},
        "Health": {"type": "object", "required": ["status", "model_loaded"],
                   "properties": {"status": {"const": "ok"}, "model_loaded": {"type": "boolean"},
                                  "ready": {"type": "boolean"}, "model": {"type": "string"}}},
        "Ready": {"type": "object", "required": ["status"],
                  "properties": {"status": {"enum": ["loading", "ready", "failed"]}, "reason": {"type": "string"}}},
    }
