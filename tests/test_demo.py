"""`vqa demo` end to end on a reduced size: every stage runs and the models use the image."""

import json
import re
import shlex

import pytest

from vqa.cli import main


@pytest.mark.slow
def test_demo_runs_the_tutorial_and_beats_question_only(tmp_path, capsys):
    workdir = tmp_path / "demo"
    # 80 images (64 val questions) and 96 LSTM steps as 120 images' 8 epochs gave: here each model led the
    # question-only answers by 21-25 points, twice the margins asserted below
    code = main(["demo", "--workdir", str(workdir), "--images", "80", "--mlp-epochs", "10", "--lstm-epochs", "12",
                 "--san-epochs", "8", "--relations", "--relation-images", "24", "--relation-epochs", "1"])
    out = capsys.readouterr().out
    assert code == 0
    main_table = out.split("Relations:")[0]
    overall = {name: float(value) for name, value in
               re.findall(r"^(MLP|LSTM|SAN|question only)\b.*?\s(\d+\.\d\d)\s", main_table, flags=re.MULTILINE)}
    assert set(overall) == {"MLP", "LSTM", "SAN", "question only"}
    relations = out.split("Relations:")[1]  # the relational part: the SAN and question only, per kind
    assert re.search(r"^SAN \(image \+ question\)\s+\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d", relations, flags=re.MULTILINE)
    assert (workdir / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for model in ("MLP", "LSTM"):  # the image must add a clear margin
        assert overall[model] > overall["question only"] + 10, out
    assert overall["SAN"] > overall["question only"] + 5, out  # the attention model looks too
    for kind in ("mlp", "lstm", "san"):
        report = json.loads((workdir / "results" / kind / "report.json").read_text())
        assert round(report["overall"], 2) == overall[kind.upper()]
        assert list((workdir / "Graph" / kind).rglob("events.out.tfevents.*")), "no TensorBoard logs"
        assert (workdir / "models" / kind / "model.keras").is_file()
    assert out.count("We're ") == 2  # two sample questions answered in the tutorial's style
    curl = next(line for line in out.splitlines() if "curl -F image=@" in line)
    image = re.search(r"image=@(\S+)", curl).group(1)
    assert (workdir / "data").as_posix() in image and image.endswith(".jpg")
    assert "gunicorn" in out and "tensorboard --logdir" in out
    # The results file beside the tables: what ran, where, how long each stage took, what it scored.
    record = json.loads((workdir / "demo_results.json").read_text())
    assert record["command"] == (f"vqa demo --workdir {workdir} --images 80 --mlp-epochs 10 --lstm-epochs 12 "
                                 "--san-epochs 8 --relations --relation-images 24 --relation-epochs 1")
    assert {"git_commit", "date", "machine"} <= set(record) and record["machine"]["cores"] >= 1
    figures = record["figures"]
    assert list(figures["seconds"]) == ["data", "mlp", "lstm", "san", "attention", "relations", "ask", "total"]
    assert figures["seconds"]["total"] >= sum(v for k, v in figures["seconds"].items() if k != "total") - 1
    assert figures["peak_rss_gb"] > 0.1
    for kind in ("mlp", "lstm", "san"):
        assert figures["accuracy"][kind]["overall"] == overall[kind.upper()]
    assert figures["question_only"]["overall"] == overall["question only"]
    assert set(figures["relations"]) == {"san", "question_only"}
    assert (workdir / "summary.txt").read_text().strip() in out


def test_demo_command_names_only_the_flags_that_differ(tmp_path):
    from vqa.config import DemoSettings
    from vqa.demo import demo_command

    assert demo_command(tmp_path, DemoSettings()) == f"vqa demo --workdir {tmp_path}"
    assert demo_command(tmp_path, DemoSettings(num_images=50, relations=True, lstm_units=64)) == \
        f"vqa demo --workdir {tmp_path} --images 50 --relations"


def test_the_recorded_command_parses_back_to_the_settings(tmp_path):
    from vqa.cli import build_parser
    from vqa.config import DemoSettings, demo_flag_fields
    from vqa.demo import demo_command

    settings = DemoSettings(num_images=50, relations=True, seed=3, san_epochs=2)
    args = build_parser().parse_args(shlex.split(demo_command(tmp_path, settings))[1:])
    values = {f.name: getattr(args, f.name) for f in demo_flag_fields() if getattr(args, f.name) is not None}
    assert DemoSettings(**values) == settings and args.workdir == tmp_path


def test_serve_hint_is_a_vqa_serve_command(tmp_path):
    from vqa.cli import build_parser
    from vqa.demo import serving_instructions

    model = tmp_path / "models" / "mlp"
    hint = serving_instructions(model, tmp_path / "image.jpg", "What color is the circle?")
    serve = hint.splitlines()[0].removeprefix("Serve it:").split("   (")[0]
    args = build_parser().parse_args(shlex.split(serve)[1:])
    assert (args.command, args.model_dir, args.cnn_weights) == ("serve", model, "random")
    assert "http://127.0.0.1:5000/predict" in hint
