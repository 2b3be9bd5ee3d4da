"""The README and docs/ against the code and the results files: commands parse, figures match.

Documentation drifts when a flag is renamed: these tests extract the fenced shell
blocks of README.md, docs/*.md and serving/README.md, and feed every `vqa ...` (or
`python -m vqa ...`) line to the real argument parser; gunicorn lines must name an
importable app factory. Usage notation (`[--flag VALUE]`, `a|b`) is for prose, not
fenced commands, so a fenced line that uses it fails here too.

A measured figure drifts when a benchmark is re-run: `python -m bench.figures --check`
(bench/figures.py, run here) holds every figure of every page against the results file its
hidden marker names, and fails on figures that name none.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path

import pytest

from bench import figures
from vqa.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", ROOT / "serving" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
ENVIRONMENT_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
SHELL_OPERATORS = {"&", "&&", "|", "||", ";"}


def shell_commands(path: Path) -> list[str]:
    """The commands of a document's fenced shell blocks, continuation lines joined, comments dropped."""
    commands = []
    for language, block in FENCE.findall(path.read_text(encoding="utf-8")):
        if language not in ("", "bash", "sh", "shell", "console"):
            continue
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def words_of(command: str) -> list[str]:
    """The command's words after any leading VAR=value assignments (comments removed)."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError:  # an output sample in an untagged block, unless it runs a program we check
        if command.startswith(("vqa ", "python -m vqa", "gunicorn")):
            raise
        return []
    while words and ENVIRONMENT_ASSIGNMENT.match(words[0]):
        words.pop(0)
    for position, word in enumerate(words):  # stop at redirections, pipes and command separators
        if word in SHELL_OPERATORS or word.startswith((">", "2>")):
            return words[:position]
    return words


def documented(program: str) -> list[tuple[str, list[str]]]:
    """(document name, argv after the program) of every documented command running ``program``."""
    found = []
    for path in DOCUMENTS:
        for command in shell_commands(path):
            words = words_of(command)
            if program == "vqa" and words[:3] == ["python", "-m", "vqa"]:
                words = ["vqa", *words[3:]]
            if words and words[0] == program:
                found.append((str(path.relative_to(ROOT)), words[1:]))
    return found


VQA_COMMANDS = documented("vqa")
GUNICORN_COMMANDS = documented("gunicorn")


def test_the_documents_show_commands():
    # Guards the extraction itself: the README's workflow alone has a dozen commands.
    assert len(VQA_COMMANDS) >= 20 and len(GUNICORN_COMMANDS) >= 2


@pytest.mark.parametrize("document, argv", VQA_COMMANDS, ids=[f"{d}: vqa {' '.join(a)[:60]}" for d, a in VQA_COMMANDS])
def test_documented_vqa_command_parses(document, argv, capsys):
    try:
        build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{document}: `vqa {' '.join(argv)}` does not parse: {capsys.readouterr().err.strip()}")


@pytest.mark.parametrize("document, argv", GUNICORN_COMMANDS)
def test_documented_gunicorn_app_imports(document, argv):
    module_name, factory = argv[-1].rstrip("()").split(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, factory)), f"{document}: {argv[-1]} names no app factory"


# --------------------------------------------------------------------------- sourced figures
@pytest.mark.parametrize("document", [pytest.param(path, id=str(path.relative_to(ROOT)))
                                      for path in figures.documents(ROOT)])
def test_every_figure_is_sourced_and_matches_its_results_file(document):
    _, problems = figures.check_document(document, ROOT, notes=[])
    assert not problems, "\n".join(problems)


def test_every_cited_results_file_records_its_provenance():
    problems, _ = figures.check(ROOT)
    provenance = [problem for problem in problems if "lacks provenance" in problem]
    assert not provenance, "\n".join(provenance)


def test_the_readme_and_docs_source_their_figures():
    # Guards the markup itself: a regex that stopped matching would pass every document.
    counts = {str(path.relative_to(ROOT)): figures.check_document(path, ROOT)[0] for path in figures.documents(ROOT)}
    assert counts["README.md"] >= 10 and counts["docs/training.md"] >= 5, counts


PROVENANCE = {"command": "python -m bench.bench_x", "date": "2026-12-06T20:00:00+00:00", "git_commit": "0" * 40,
              "machine": {"cores": 2, "load_average": [0.1, 0.2, 0.3], "load_average_end": [0.2, 0.2, 0.3]}}


def write_results(root, **changes):
    (root / "bench").mkdir(exist_ok=True)
    record = {**PROVENANCE, "figures": {"san": {"overall": 60.4, "history": {"val": [0.41, 0.528, 0.515]}},
                                        "question_only": {"overall": 39.46}, "train-mlp": {"seconds": 1086.1}}}
    (root / "bench" / "results_x.json").write_text(json.dumps({**record, **changes}))


@pytest.fixture()
def fake_repository(tmp_path):
    write_results(tmp_path)
    return tmp_path


def write_document(root: Path, body: str) -> Path:
    document = root / "README.md"
    document.write_text(body + "\n\nSource: [bench/results_x.json](bench/results_x.json).\n")
    return document


@pytest.mark.parametrize("body", [
    "**60.40**<!-- bench/results_x.json: san.overall -->",
    "| 60.4 %<!-- bench/results_x.json: san.overall --> |",
    "52.8<!-- bench/results_x.json: 100 * san.history.val[1] --> at epoch 2<!-- bench/results_x.json: "
    "argmax(san.history.val) + 1 -->",
    "+20.9<!-- bench/results_x.json: san.overall - question_only.overall --> points",
    "1,086 s<!-- bench/results_x.json: root[\"figures\"][\"train-mlp\"].seconds -->",
])
def test_a_figure_equal_to_its_source_at_the_printed_precision_passes(fake_repository, body):
    assert figures.check_document(write_document(fake_repository, body), fake_repository) == (body.count("<!--"), [])


@pytest.mark.parametrize("body, expected", [
    ("60.41<!-- bench/results_x.json: san.overall -->", "figure 60.41 from bench/results_x.json: san.overall: "
     "printed 60.41, the file has 60.4"),
    ("still rising at 52.8<!-- bench/results_x.json: 100 * san.history.val[2] -->", "the file has 51.5"),
    ("60.4<!-- bench/results_missing.json: san.overall --> (bench/results_missing.json)",
     "figure 60.4 from bench/results_missing.json: san.overall: results file bench/results_missing.json not found"),
    ("60.4<!-- bench/results_x.json: lstm.overall -->", "figure 60.4 from bench/results_x.json: lstm.overall: "
     "no key 'lstm'"),
    ("60.4<!-- bench/results_x.json: san.history.val[7] -->", "no key 7"),
])
def test_a_drifted_figure_or_a_missing_source_fails_naming_both(fake_repository, body, expected):
    count, problems = figures.check_document(write_document(fake_repository, body), fake_repository)
    assert count == 1 and len(problems) == 1 and expected in problems[0], problems


def test_a_source_the_text_never_names_fails(fake_repository):
    document = fake_repository / "README.md"
    document.write_text("60.4<!-- bench/results_x.json: san.overall -->\n")
    assert "the text never names bench/results_x.json" in figures.check_document(document, fake_repository)[1][0]


@pytest.mark.parametrize("body, figure", [
    ("The SAN scores 60.4 % on val.", "60.4 %"), ("an epoch takes 58 h on two cores", "58 h"),
    ("each image is 16.7 KB", "16.7 KB"), ("| MLP | 87.62 | x |", "87.62"), ("11.0x faster", "11.0x"),
    ("2.5 GiB per worker", "2.5 GiB"), ("serves 0.98 requests/s", "0.98 requests/s"),
])
def test_a_figure_without_a_marker_fails(fake_repository, body, figure):
    problems = figures.check_document(write_document(fake_repository, body), fake_repository)[1]
    assert problems == [f"README.md:1: figure {figure} names no results file (add a marker, or label it estimate)"]


@pytest.mark.parametrize("body", [
    "about 1 GB of zips (estimate)", "*projected*: 4.6 s per epoch", "48.33 % (the tutorial's figure)",
    "`--batch-timeout-ms 20` and `0.5`", "```\nMLP  87.62 %\n```", "a 3 x 512 LSTM over 14 x 14 regions",
    "[link](docs/scale.md#gpu-2.5s)", "VQA v2 and spaCy 3.8 with Python 3.11",
])
def test_labelled_figures_settings_and_code_pass(fake_repository, body):
    assert figures.check_document(write_document(fake_repository, body), fake_repository)[1] == []


@pytest.mark.parametrize("changes, expected", [
    ({"git_commit": "abc-dirty"}, "a clean commit (it has abc-dirty)"),
    ({"command": None, "date": ""}, "lacks provenance: command, date"),
    ({"machine": {"cores": 2, "load_average": [1, 1, 1]}}, "the load average at the start and the end"),
])
def test_a_cited_file_without_full_provenance_fails(tmp_path, changes, expected):
    write_results(tmp_path, **changes)
    write_document(tmp_path, "60.4<!-- bench/results_x.json: san.overall -->")
    problems, notes = figures.check(tmp_path, awaiting=frozenset())
    assert len(problems) == 1 and expected in problems[0] and "cited by README.md" in problems[0], problems
    assert figures.check(tmp_path, awaiting=frozenset({"bench/results_x.json"})) == ([], problems)


def test_a_figure_of_a_results_file_not_yet_written_is_noted_not_failed(tmp_path):
    write_document(tmp_path, "60.4<!-- bench/results_x.json: san.overall -->")
    problems, notes = figures.check(tmp_path, awaiting=frozenset({"bench/results_x.json"}))
    assert problems == [] and "results file bench/results_x.json not found" in notes[0]
    assert "not found" in figures.check(tmp_path, awaiting=frozenset())[0][0]


def test_write_refreshes_each_figure_at_its_printed_precision(fake_repository):
    document = write_document(fake_repository, (
        "**61.00**<!-- bench/results_x.json: san.overall --> and "
        "+20<!-- bench/results_x.json: san.overall - question_only.overall --> points; "
        "2,086 s<!-- bench/results_x.json: root[\"figures\"][\"train-mlp\"].seconds -->"))
    changes = figures.write(fake_repository)
    assert len(changes) == 3 and figures.check(fake_repository) == ([], [])
    assert document.read_text().startswith("**60.40**<!-- bench/results_x.json: san.overall --> and +21<!--")
    assert "1,086 s<!--" in document.read_text() and figures.write(fake_repository) == []


def test_generated_tables_match_their_settings_objects():
    stale = [str(path.relative_to(ROOT)) for path in figures.documents(ROOT)
             if figures.refresh_tables(text := path.read_text(encoding="utf-8")) != text]
    assert stale == [], "run python -m bench.figures --write"
    assert "<!-- table: serving-settings -->" in (ROOT / "docs" / "serving.md").read_text(encoding="utf-8")


def test_the_attention_table_is_built_from_bench_attentions_results_files(tmp_path):
    from bench.bench_attention import leads, summary

    def run(seed, overall, binding, position, count):  # a kind's name may hold a space, as "how many"
        return {"seed": seed, "recipe": {}, "train_seconds": 100.0 + seed, "overall": overall,
                "per_kind": {"binding": binding, "position": position, "how many": count}, "history": {}}

    results = {"scenes": 1500, "seeds": [0, 1], "epochs": 10, "questions": {"train": 7103, "val": 1775},
               "question_only": {"overall": 40.1, "per_kind": {"binding": 39.0, "position": 41.2, "how many": 50.0}},
               "lstm": summary([run(0, 41.32, 41.73, 40.9, 50.0), run(1, 42.0, 42.5, 41.5, 50.0)]),
               "topdown": summary([run(0, 46.06, 43.76, 48.42, 52.5), run(1, 46.5, 45.0, 48.0, 52.5)])}
    results["lead"] = leads(results, ["lstm", "topdown"])
    assert results["lead"]["topdown"] == {"overall": 4.62, "worst_kind": 2.27,
                                          "per_kind": {"binding": 2.27, "how many": 2.5, "position": 7.01}}
    (tmp_path / "bench").mkdir()
    (tmp_path / figures.ATTENTION_RESULTS[0]).write_text(json.dumps({**PROVENANCE, "figures": results}))
    table = figures.attention_table(tmp_path)
    assert "| | topdown | 46.28<!-- bench/results_attention_1500.json: topdown.overall.mean --> (46.06<!--" in table
    assert "+4.62<!-- bench/results_attention_1500.json: lead.topdown.overall -->" in table
    assert "| `bench/results_attention_4500.json` | not measured yet" in table
    (tmp_path / "docs").mkdir()
    document = tmp_path / "docs" / "attention.md"
    document.write_text(f"<!-- table: attention-comparison -->\n{table}<!-- /table -->\n")
    sourced, problems = figures.check_document(document, tmp_path)
    assert sourced == 22 and problems == []  # every cell matches the file it names
