"""GET /openapi.json: a valid OpenAPI 3.1 document that the app's real answers, good and bad, match."""

from __future__ import annotations

import io
import threading

import jsonschema
import pytest
from openapi_spec_validator import validate

from serving.app import ATTENTION_OFF, ATTENTION_ON, MAX_QUESTION_CHARS, QUESTION_FIELDS, create_app
from vqa.batching import Admission
from vqa.serve_config import MAX_TOP

QUESTION = "What color is the circle?"


@pytest.fixture(scope="module")
def jpeg(synth_data) -> bytes:
    return synth_data.image.read_bytes()


@pytest.fixture(scope="module")
def document(app) -> dict:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def check_answer(document: dict, path: str, method: str, response) -> None:
    """Validate ``response`` (a test client answer) against the document's schema for its status."""
    declared = document["paths"][path][method]["responses"]
    assert str(response.status_code) in declared, f"{response.status_code} not declared for {method} {path}"
    content = declared[str(response.status_code)]["content"]
    assert response.mimetype in content
    schema = {**content[response.mimetype]["schema"], "components": document["components"]}
    body = response.get_json() if response.is_json else response.get_data(as_text=True)
    jsonschema.Draft202012Validator(schema).validate(body)


def form(image: bytes | None, question: str | None = QUESTION, **fields) -> dict:
    data = {} if image is None else {"image": (io.BytesIO(image), "image.jpg")}
    return {**data, **({} if question is None else {"question": question}), **fields}


def test_the_document_is_valid_openapi_and_states_the_codes_limits(document):
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {"/predict", "/healthz", "/readyz", "/metrics", "/openapi.json"}
    fields = document["paths"]["/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(QUESTION_FIELDS) | {"image", "top", "attention"} == set(fields["properties"])
    assert all(fields["properties"][name]["maxLength"] == MAX_QUESTION_CHARS for name in QUESTION_FIELDS)
    assert fields["properties"]["top"]["maximum"] == MAX_TOP and fields["properties"]["top"]["default"] == 5
    attention = jsonschema.Draft202012Validator(fields["properties"]["attention"])
    assert all(attention.is_valid(word.upper()) for word in ATTENTION_ON + ATTENTION_OFF)
    assert not attention.is_valid("maybe")
    errors = document["paths"]["/predict"]["post"]["responses"]
    assert {"200", "400", "413", "503"} <= set(errors) and "Retry-After" in errors["503"]["headers"]


@pytest.mark.parametrize("data", [
    lambda jpeg: form(jpeg, top="3"),
    lambda jpeg: form(jpeg, None, ques=QUESTION),
    lambda jpeg: form(jpeg, top="50", attention="no"),
], ids=["question", "ques", "top-50"])
def test_good_answers_match_the_document(client, document, jpeg, data):
    response = client.post("/predict", data=data(jpeg))
    assert response.status_code == 200
    check_answer(document, "/predict", "post", response)


def test_an_answer_with_attention_matches_the_document(san_client, document, jpeg):
    response = san_client.post("/predict", data=form(jpeg, attention="1"))
    assert response.status_code == 200 and "attention" in response.get_json()
    check_answer(document, "/predict", "post", response)


@pytest.mark.parametrize("data, status", [
    (lambda jpeg: form(None), 400), (lambda jpeg: form(jpeg, None), 400), (lambda jpeg: form(b"GIF89 no"), 400),
    (lambda jpeg: form(jpeg, "why " * 80), 400), (lambda jpeg: form(jpeg, top="51"), 400),
    (lambda jpeg: form(jpeg, attention="1"), 400), (lambda jpeg: form(b"\xff" * (1024 * 1024 + 1)), 413),
], ids=["no-image", "no-question", "not-an-image", "long-question", "top-51", "attention-of-an-mlp", "too-big"])
def test_error_answers_match_the_documents_error_shape(client, document, jpeg, data, status):
    response = client.post("/predict", data=data(jpeg))
    assert response.status_code == status
    check_answer(document, "/predict", "post", response)


def test_a_503_matches_the_document(predictor, document, jpeg, monkeypatch):
    monkeypatch.setattr(predictor, "admission", Admission(max_queue=1))
    app = create_app({"TESTING": True, "VQA_PREDICTOR": predictor})
    with predictor.admission.admit():
        response = app.test_client().post("/predict", data=form(jpeg))
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    check_answer(document, "/predict", "post", response)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/openapi.json"])
def test_the_other_routes_match_the_document(client, document, path):
    response = client.get(path)
    assert response.status_code == 200
    check_answer(document, path, "get", response)


def test_readyz_while_loading_matches_the_document(predictor, document):
    gate = threading.Event()

    class Loading:
        def __getattr__(self, name):
            return getattr(predictor, name)

        def set_observer(self, observer):
            pass

        def warm_up(self):
            gate.wait(30)

    app = create_app({"TESTING": True, "VQA_PREDICTOR": Loading(), "VQA_BACKGROUND_LOAD": "1"})
    response = app.test_client().get("/readyz")
    gate.set()
    assert response.status_code == 503
    check_answer(document, "/readyz", "get", response)
