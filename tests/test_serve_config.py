"""vqa.serve_config: one home for every serving setting; `vqa serve`'s flags and the app's environment built from it."""

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from vqa.cli import build_parser
from vqa.errors import InputError
from vqa.config import flag_name, value_text
from vqa.serve_config import ServeSettings

FIELDS = dataclasses.fields(ServeSettings)
STATED = re.compile(r"\(default: (VQA_\w+), else ([^)]+)\)")
# A value other than the default for every field, as text (what a flag or a variable holds).
OTHER_VALUES = {"model_dir": "models/mlp", "host": "0.0.0.0", "port": "5123", "workers": "3", "threads": "2",
                "timeout": "30", "cnn_weights": "random", "checkpoint": "best", "spacy_model": "en_core_web_sm",
                "max_batch_size": "16", "batch_timeout_ms": "2.5", "feature_cache_mb": "0", "max_upload_mb": "1.5",
                "top_k": "7", "background_load": "1", "insecure_no_digest": "1",
                "poll_seconds": "0.5", "max_queue": "0", "request_timeout_ms": "250", "log_format": "json"}


def serve_parser():
    """The argparse parser of `vqa serve`."""
    return build_parser()._subparsers._group_actions[0].choices["serve"]


def test_every_field_has_a_flag_a_variable_and_a_test_value():
    actions = {action.dest: action for action in serve_parser()._actions}
    assert {field.name for field in FIELDS} <= set(actions)
    variables = [field.metadata["env"] for field in FIELDS]
    assert all(name.startswith("VQA_") for name in variables) and len(set(variables)) == len(variables)
    assert set(OTHER_VALUES) == {field.name for field in FIELDS}
    for field in FIELDS:
        assert flag_name(field) in actions[field.name].option_strings


def test_help_states_each_variable_and_the_default_a_run_without_flags_uses():
    running = ServeSettings.from_environ({}, flags=vars(serve_parser().parse_args(["--model", "m"])))
    assert running == ServeSettings(model_dir=Path("m"))
    for action in serve_parser()._actions:
        field = next((f for f in FIELDS if f.name == action.dest), None)
        if field is None or field.metadata["required_flag"]:
            continue
        variable, default = STATED.search(" ".join(action.help.split())).groups()
        assert variable == field.metadata["env"]
        assert default == value_text(getattr(running, field.name))


@pytest.mark.parametrize("name", [field.name for field in FIELDS])
def test_each_variable_and_each_flag_round_trips(name):
    field = next(f for f in FIELDS if f.name == name)
    from_environment = ServeSettings.from_environ({field.metadata["env"]: OTHER_VALUES[name]})
    assert getattr(from_environment, name) != field.default
    assert ServeSettings.from_environ(from_environment.environment()) == from_environment
    words = shlex.split(from_environment.command_line())
    if name != "model_dir":
        words[2:2] = ["--model", "m"]
    flags = vars(serve_parser().parse_args(words[2:]))
    assert getattr(ServeSettings.from_environ({}, flags=flags), name) == getattr(from_environment, name)


def test_flags_win_over_the_config_mapping_over_the_environment():
    environ = {"VQA_TOP_K": "7", "VQA_PORT": "6000", "VQA_THREADS": "3", "VQA_HOST": " "}  # blank = unset
    settings = ServeSettings.from_environ(environ, config={"VQA_TOP_K": 3, "VQA_PORT": 7000}, flags={"port": "8000"})
    assert (settings.top_k, settings.port, settings.threads, settings.host) == (3, 8000, 3, "127.0.0.1")


@pytest.mark.parametrize("source, message", [
    ({"flags": {"workers": "0"}}, "--workers must be at least 1, got '0'"),
    ({"flags": {"port": "70000"}}, "--port must be in 1..65535"),
    ({"flags": {"max_batch_size": "2.5"}}, "--max-batch-size must be an integer >= 1"),
    ({"environ": {"VQA_BATCH_TIMEOUT_MS": "nan"}}, "VQA_BATCH_TIMEOUT_MS must be a number >= 0"),
    ({"environ": {"VQA_TOP_K": "51"}}, "VQA_TOP_K must be an integer in 1..50"),
    ({"config": {"VQA_MAX_UPLOAD_MB": 0}}, "VQA_MAX_UPLOAD_MB must be a positive number of megabytes"),
    ({"environ": {"VQA_BACKGROUND_LOAD": "maybe"}}, "VQA_BACKGROUND_LOAD must be one of 1, true"),
    ({"config": {"VQA_CNN_WEIGHTS": " "}}, "VQA_CNN_WEIGHTS must be a non-empty value"),
])
def test_a_bad_value_is_one_line_naming_its_flag_or_variable(source, message):
    with pytest.raises(InputError, match=re.escape(message)):
        ServeSettings.from_environ(source.get("environ", {}), config=source.get("config"), flags=source.get("flags"))


def test_a_blank_optional_setting_is_unset():
    settings = ServeSettings.from_environ({"VQA_MODEL_DIR": "m"}, config={"VQA_MODEL_DIR": "", "VQA_SPACY_MODEL": " "})
    assert settings.model_dir is None and settings.spacy_model is None


def test_markdown_table_has_a_row_per_setting():
    rows = ServeSettings.markdown_table().splitlines()
    assert rows[0].startswith("| setting | flag | environment | default |") and len(rows) == 2 + len(FIELDS)
    assert "| `max_batch_size` | `--max-batch-size` | `VQA_MAX_BATCH_SIZE` | 8 |" in "\n".join(rows)


def test_a_model_url_stays_a_url_from_a_flag_and_from_the_environment():
    url = "https://example.org/models/mlp.vqa.tar#sha256=" + "0" * 64
    from_flag = ServeSettings.from_environ({}, flags=vars(serve_parser().parse_args(["--model", url])))
    assert from_flag.model_dir == url == ServeSettings.from_environ({"VQA_MODEL_DIR": url}).model_dir
    assert ServeSettings.from_environ({}, flags={"model_dir": "models/mlp"}).model_dir == Path("models/mlp")
