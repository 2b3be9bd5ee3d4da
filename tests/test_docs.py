"""The README and docs/ against the code and the results files: commands parse, figures match.

Documentation drifts when a flag is renamed: these tests extract the fenced shell
blocks of README.md, docs/*.md and serving/README.md, and feed every `vqa ...` (or
`python -m vqa ...`) line to the real argument parser; gunicorn lines must name an
importable app factory. Usage notation (`[--flag VALUE]`, `a|b`) is for prose, not
fenced commands, so a fenced line that uses it fails here too.

A measured figure drifts when a benchmark is re-run: each sourced figure carries an
HTML comment (hidden on GitHub) naming its results file and the value's place in it,

    **60.40**<!-- bench/results_attention_4500.json: san.overall -->
    52.8<!-- bench/results_attention.json: 100 * san.history.val_modal_accuracy[16] -->

and the figure must equal that value at the precision printed (docs/README "How the figures
are sourced"). The place is a small expression: keys as attributes or ``["quoted"]``
(``root`` is the whole file), list indices, + - * / (+ joins lists), and max, min, argmax,
argmin, median, len, abs, ceil, ratios (element-wise a / b of two lists).
"""

from __future__ import annotations

import ast
import importlib
import json
import math
import re
import shlex
import statistics
from pathlib import Path

import pytest

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
FIGURE_SOURCE = re.compile(
    # 1,086 / 52.8 / +20.9; a sign only after a space or an opening mark, so "1.89-2.10" is a range
    r"(?<![\w.,])(?P<figure>(?:(?:(?<=[\s(|*])|^)[+-])?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)"
    r"(?P<unit>\s?(?:%|x|s|ms|GB|MB|samples/s|images/s|pp|points))?\**"
    r"<!--\s*(?P<file>bench/[\w./-]+\.json)\s*:\s*(?P<expression>.*?)\s*-->")
FIGURE_DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FUNCTIONS = {"max": max, "min": min, "len": len, "abs": abs, "median": statistics.median,
             "ceil": math.ceil,
             "ratios": lambda numerators, denominators: [a / b for a, b in zip(numerators, denominators)],
             "argmax": lambda values: max(range(len(values)), key=values.__getitem__),
             "argmin": lambda values: min(range(len(values)), key=values.__getitem__)}


class SourceError(Exception):
    """A figure's results file or key cannot be read."""


def source_value(results: dict, expression: str) -> float:
    """The value ``expression`` names in ``results`` (a parsed results file); SourceError naming a missing key."""
    def walk(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return results if node.id == "root" else lookup(results, node.id)
        if isinstance(node, ast.Attribute):
            return lookup(walk(node.value), node.attr)
        if isinstance(node, ast.Subscript):
            return lookup(walk(node.value), walk(node.slice))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
            return OPERATORS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in FUNCTIONS:
            return FUNCTIONS[node.func.id](*[walk(argument) for argument in node.args])
        raise SourceError(f"unsupported expression {ast.unparse(node)!r}")

    def lookup(container, key):
        try:
            return container[key]
        except (KeyError, IndexError, TypeError):
            raise SourceError(f"no key {key!r} (in {expression!r})") from None

    return walk(ast.parse(expression, mode="eval").body)


OPERATORS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
             ast.Div: lambda a, b: a / b}


def figure_matches(figure: str, value: float) -> bool:
    """Whether the printed ``figure`` is ``value`` at the precision printed (its number of decimals)."""
    digits = figure.replace(",", "")
    decimals = len(digits.split(".")[1]) if "." in digits else 0
    return math.isclose(float(digits), float(value), abs_tol=0.5 * 10 ** -decimals + 1e-9)


def check_figures(document: Path, root: Path = ROOT) -> tuple[int, list[str]]:
    """(sourced figures found, one problem line per figure that drifted or whose source is missing)."""
    text = document.read_text(encoding="utf-8")
    visible = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    problems, cache = [], {}
    matches = list(FIGURE_SOURCE.finditer(text))
    for match in matches:
        figure, name, expression = match["figure"], match["file"], match["expression"]
        line = text.count("\n", 0, match.start()) + 1
        where = f"{document.name}:{line}: figure {figure} from {name}: {expression}"
        if Path(name).name not in visible:
            problems.append(f"{where}: the text never names {name}")
        try:
            if name not in cache:
                path = root / name
                if not path.is_file():
                    raise SourceError(f"results file {name} not found")
                cache[name] = json.loads(path.read_text(encoding="utf-8"))
            value = source_value(cache[name], expression)
        except SourceError as error:
            problems.append(f"{where}: {error}")
            continue
        if not figure_matches(figure, value):
            problems.append(f"{where}: the file has {value!r}")
    return len(matches), problems


@pytest.mark.parametrize("document", FIGURE_DOCUMENTS, ids=lambda path: path.name)
def test_sourced_figures_match_their_results_files(document):
    _, problems = check_figures(document)
    assert not problems, "\n".join(problems)


def test_the_readme_and_docs_source_their_figures():
    # Guards the markup itself: a regex that stopped matching would pass every document.
    counts = {path.name: check_figures(path)[0] for path in FIGURE_DOCUMENTS}
    assert counts["README.md"] >= 20 and counts["attention.md"] >= 20, counts


@pytest.fixture()
def fake_repository(tmp_path):
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "results_x.json").write_text(json.dumps(
        {"san": {"overall": 60.4, "history": {"val": [0.41, 0.528, 0.515]}}, "question_only": {"overall": 39.46},
         "train-mlp": {"seconds": 1086.1}}))
    return tmp_path


def write_document(root: Path, body: str) -> Path:
    document = root / "doc.md"
    document.write_text(body + "\n\nSource: [bench/results_x.json](bench/results_x.json).\n")
    return document


@pytest.mark.parametrize("body", [
    "**60.40**<!-- bench/results_x.json: san.overall -->",
    "| 60.4 %<!-- bench/results_x.json: san.overall --> |",
    "52.8<!-- bench/results_x.json: 100 * san.history.val[1] --> at epoch 2<!-- bench/results_x.json: "
    "argmax(san.history.val) + 1 -->",
    "+20.9<!-- bench/results_x.json: san.overall - question_only.overall --> points",
    "1,086 s<!-- bench/results_x.json: root[\"train-mlp\"].seconds -->",
])
def test_a_figure_equal_to_its_source_at_the_printed_precision_passes(fake_repository, body):
    assert check_figures(write_document(fake_repository, body), fake_repository) == (body.count("<!--"), [])


@pytest.mark.parametrize("body, expected", [
    ("60.41<!-- bench/results_x.json: san.overall -->", "figure 60.41 from bench/results_x.json: san.overall: "
     "the file has 60.4"),
    ("still rising at 52.8<!-- bench/results_x.json: 100 * san.history.val[2] -->", "the file has 51.5"),
    ("60.4<!-- bench/results_missing.json: san.overall --> (bench/results_missing.json)",
     "figure 60.4 from bench/results_missing.json: san.overall: results file bench/results_missing.json not found"),
    ("60.4<!-- bench/results_x.json: lstm.overall -->", "figure 60.4 from bench/results_x.json: lstm.overall: "
     "no key 'lstm'"),
    ("60.4<!-- bench/results_x.json: san.history.val[7] -->", "no key 7"),
])
def test_a_drifted_figure_or_a_missing_source_fails_naming_both(fake_repository, body, expected):
    count, problems = check_figures(write_document(fake_repository, body), fake_repository)
    assert count == 1 and len(problems) == 1 and expected in problems[0], problems


def test_a_source_the_text_never_names_fails(fake_repository):
    document = fake_repository / "doc.md"
    document.write_text("60.4<!-- bench/results_x.json: san.overall -->\n")
    assert "the text never names bench/results_x.json" in check_figures(document, fake_repository)[1][0]
