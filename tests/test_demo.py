"""`vqa demo` end to end on a reduced size: every stage runs and the models use the image."""

import json
import re

import pytest

from vqa.cli import main


@pytest.mark.slow
def test_demo_runs_the_tutorial_and_beats_question_only(tmp_path, capsys):
    workdir = tmp_path / "demo"
    code = main(["demo", "--workdir", str(workdir), "--images", "120", "--mlp-epochs", "10", "--lstm-epochs", "8",
                 "--san-epochs", "8", "--relation-images", "40", "--relation-epochs", "1"])
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
