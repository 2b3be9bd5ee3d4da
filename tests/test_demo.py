"""`vqa demo` end to end on a reduced size: every stage runs and the models use the image."""

import json
import re

import pytest

from vqa.cli import main


@pytest.mark.slow
def test_demo_runs_the_tutorial_and_beats_question_only(tmp_path, capsys):
    workdir = tmp_path / "demo"
    code = main(["demo", "--workdir", str(workdir), "--images", "160", "--mlp-epochs", "10", "--lstm-epochs", "8",
                 "--san-epochs", "8", "--relation-images", "40", "--relation-epochs", "1"])
    out = capsys.readouterr().out
    assert code == 0
    overall = {name: float(value) for name, value in
               re.findall(r"^(MLP|LSTM|question only)\b.*?\s(\d+\.\d\d)\s", out, flags=re.MULTILINE)}
    assert set(overall) == {"MLP", "LSTM", "question only"}
    for model in ("MLP", "LSTM"):  # the image must add a clear margin
        assert overall[model] > overall["question only"] + 10, out
    for kind in ("mlp", "lstm"):
        report = json.loads((workdir / "results" / kind / "report.json").read_text())
        assert round(report["overall"], 2) == overall[kind.upper()]
        assert list((workdir / "Graph" / kind).rglob("events.out.tfevents.*")), "no TensorBoard logs"
        assert (workdir / "models" / kind / "model.keras").is_file()
    assert out.count("We're ") == 2  # two sample questions answered in the tutorial's style
    curl = next(line for line in out.splitlines() if "curl -F image=@" in line)
    image = re.search(r"image=@(\S+)", curl).group(1)
    assert (workdir / "data").as_posix() in image and image.endswith(".jpg")
    assert "gunicorn" in out and "tensorboard --logdir" in out
