"""Check, or refresh, every measured figure of README.md, docs/*.md and serving/README.md.

    python -m bench.figures --check   # exit 1, one line per problem: document:line, file, expression, printed vs actual
    python -m bench.figures --write   # rewrite each sourced figure from its results file, at its printed precision

A measured figure carries a hidden marker naming its results file and the value's place in it:

    **53.90**<!-- bench/results_attention_1500.json: topdown.overall.mean -->

The place is a small expression: keys as attributes or ``["quoted"]`` (``root`` is the whole
file; a top-level name missing from the file is looked up under its ``figures``), list
indices, + - * / (+ joins lists), and max, min, argmax, argmin, median, len, abs, ceil,
ratios (element-wise a / b of two lists). The figure must equal the value at the precision
printed, and the cited file must record its provenance: command, date, a clean git commit
and the machine with its load average at the start and the end of the run.

Every other figure fails the check: a number followed by a unit (%, x, s, ms, min, h, KB,
MB, GB, GiB, samples/s, ...) or a decimal number in a table cell, unless its line says it
is an *estimate*, *projected*, or quoted (*the tutorial's*, *the paper's*). Settings are
code (`--batch-timeout-ms 20`); fenced blocks, code spans, link targets and generated
tables (`<!-- table: NAME -->`, rebuilt from a settings object by --write) are not read.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

UNIT = r"(?:\s?(?:%|pp|points?|ms|s|min|h|KB|MB|GB|TB|KiB|MiB|GiB|samples/s|images/s|img/s|requests/s)|x)(?![\w/])"
NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"
# 1,086 / 52.8 / +20.9; a sign only after a space or an opening mark, so "1.89-2.10" is a range
FIGURE_SOURCE = re.compile(
    rf"(?<![\w.,])(?P<figure>(?:(?:(?<=[\s(|*])|^)[+-])?{NUMBER})(?P<unit>{UNIT})?\**"
    r"<!--\s*(?P<file>bench/[\w./-]+\.json)\s*:\s*(?P<expression>.*?)\s*-->", re.MULTILINE)
UNMARKED = re.compile(rf"(?<![\w.,/])(?P<figure>{NUMBER}){UNIT}")
TABLE_DECIMAL = re.compile(r"(?<![\w.,/])(?P<figure>\d+\.\d+)(?![\w.])")
LABELS = re.compile(r"estimate|projected|the tutorial's|the paper's", re.IGNORECASE)
HIDDEN = [re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL),
          re.compile(r"<!-- table: .*?<!-- /table -->", re.DOTALL),  # generated settings, not measurements
          re.compile(r"<!--.*?-->", re.DOTALL),
          re.compile(r"``.+?``", re.DOTALL), re.compile(r"`[^`]+`"), re.compile(r"\]\([^)\s]*\)")]
LOAD_READINGS = ["load_average", "load_average_start", "load_average_at_start", "load_average_end"]
# Results files the benchmarks are about to write (again): their figures stay cited, while a
# missing file, key or provenance is only noted. Empty this set once they are written.
AWAITING_REGENERATION = frozenset()
FUNCTIONS = {"max": max, "min": min, "len": len, "abs": abs, "median": statistics.median, "ceil": math.ceil,
             "ratios": lambda numerators, denominators: [a / b for a, b in zip(numerators, denominators)],
             "argmax": lambda values: max(range(len(values)), key=values.__getitem__),
             "argmin": lambda values: min(range(len(values)), key=values.__getitem__)}
OPERATORS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
             ast.Div: lambda a, b: a / b}


class SourceError(Exception):
    """A figure's results file or key cannot be read."""


# Tables generated from a settings object, between `<!-- table: NAME -->` and `<!-- /table -->`.
GENERATED = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)


# bench_attention's results files (one per size) that docs/attention.md's comparison table is built from.
ATTENTION_RESULTS = ("bench/results_attention_1500.json", "bench/results_attention_4500.json",
                     "bench/results_attention_one-shape_300.json")


def attention_table(root: Path = ROOT) -> str:
    """bench_attention's comparisons: per size and model, the mean over the seeds with its min-max, per
    question kind and the lead over the LSTM, each figure marked with its place in the results file."""
    rows = []
    for name in ATTENTION_RESULTS:
        if not (root / name).is_file():
            rows.append(f"| `{name}` | not measured yet (the commands above write it) | | | | |")
            continue
        results = json.loads((root / name).read_text(encoding="utf-8"))["figures"]

        def cell(place: str, template: str = "{:.2f}") -> str:
            return template.format(source_value(results, place)) + f"<!-- {name}: {place} -->"

        def kinds(model: str, suffix: str = "") -> str:
            names = sorted(results["lstm"]["per_kind"])
            return " / ".join(f"{k} {cell(f'{model}.per_kind[{k!r}]{suffix}')}" for k in names)

        scenes = "cluttered" if results.get("scene_kind", "relations") == "relations" else results["scene_kind"]
        rows.append(f"| [{results['scenes']:,} {scenes} scenes](../{name}) ({cell('questions.train', '{:,}')} train / "
                    f"{cell('questions.val', '{:,}')} val questions; seeds {', '.join(map(str, results['seeds']))}; "
                    f"{results['epochs']} epochs) | question only | {cell('question_only.overall')} | "
                    f"{kinds('question_only')} | | |")
        for model in (m for m in ("lstm", "topdown", "san", "mlp") if m in results):
            lead = "" if model == "lstm" else (f"{cell(f'lead.{model}.overall', '{:+.2f}')} (worst kind "
                                               f"{cell(f'lead.{model}.worst_kind', '{:+.2f}')})")
            rows.append(f"| | {model} | {cell(f'{model}.overall.mean')} ({cell(f'{model}.overall.min')}–"
                        f"{cell(f'{model}.overall.max')}) | {kinds(model, '.mean')} | {lead} | "
                        f"{cell(f'{model}.train_seconds', '{:.0f}')} |")
    return ("| val, official VQA accuracy | model | mean over the seeds (min–max) | per kind of question (mean) "
            "| lead over the LSTM | training s |\n|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def generated_table(name: str) -> str:
    """The markdown of generated table ``name`` (light imports: no Keras)."""
    from vqa.serve_config import ServeSettings

    tables = {"serving-settings": ServeSettings.markdown_table, "attention-comparison": attention_table}
    if name not in tables:
        raise SourceError(f"no generated table named {name!r} (known: {', '.join(tables)})")
    return tables[name]().rstrip("\n") + "\n"


def refresh_tables(text: str) -> str:
    """``text`` with every generated table rebuilt."""
    return GENERATED.sub(lambda m: m[1] + generated_table(m["name"]) + m[4], text)


def documents(root: Path = ROOT) -> list[Path]:
    """Every page whose figures are checked: README.md, serving/README.md, docs/*.md."""
    return [root / "README.md", root / "serving" / "README.md", *sorted((root / "docs").glob("*.md"))]


def source_value(results: dict, expression: str) -> float:
    """The value ``expression`` names in ``results`` (a parsed results file); SourceError naming a missing key."""
    def walk(node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id == "root":
                return results
            top = results if node.id in results or "figures" not in results else results["figures"]
            return lookup(top, node.id)
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

    try:
        return walk(ast.parse(expression, mode="eval").body)
    except SyntaxError:
        raise SourceError(f"unreadable expression {expression!r}") from None


def decimals_of(figure: str) -> int:
    """How many decimals ``figure`` prints."""
    return len(figure.split(".")[1]) if "." in figure else 0


def figure_matches(figure: str, value: float) -> bool:
    """Whether the printed ``figure`` is ``value`` at the precision printed (its number of decimals)."""
    return math.isclose(float(figure.replace(",", "")), float(value), abs_tol=0.5 * 10 ** -decimals_of(figure) + 1e-9)


def format_like(figure: str, value: float) -> str:
    """``value`` printed as ``figure`` is: its decimals, thousands commas and explicit sign."""
    text = f"{value:{',' if ',' in figure else ''}.{decimals_of(figure)}f}"
    return f"+{text}" if figure.startswith("+") and not text.startswith("-") else text


def provenance_problems(results: dict) -> list[str]:
    """What a results file lacks of its provenance: command, date, clean commit, machine, load at start and end."""
    missing = [key for key in ("command", "date", "git_commit", "machine") if not results.get(key)]
    if str(results.get("git_commit", "")).endswith("dirty"):
        missing.append(f"a clean commit (it has {results['git_commit']})")
    places = [results, results.get("machine"), results.get("figures")]
    readings = sum(isinstance(place, dict) and key in place for place in places for key in LOAD_READINGS)
    if readings < 2:
        missing.append("the load average at the start and the end")
    return missing


def line_of(text: str, position: int) -> int:
    """The 1-based line number of ``position`` in ``text``."""
    return text.count("\n", 0, position) + 1


def blank(match: re.Match) -> str:
    """The matched text with every character but newlines turned into a space (line numbers stay)."""
    return re.sub(r"[^\n]", " ", match[0])


def unmarked_figures(text: str) -> list[tuple[int, str]]:
    """(line, figure) of each figure with a unit, or decimal in a table cell, that has no marker or label."""
    visible = FIGURE_SOURCE.sub(blank, text)
    for pattern in HIDDEN:
        visible = pattern.sub(blank, visible)
    found = []
    for number, line in enumerate(visible.splitlines(), start=1):
        if LABELS.search(line):
            continue
        figures = list(UNMARKED.finditer(line))
        if line.lstrip().startswith("|"):
            figures += [match for match in TABLE_DECIMAL.finditer(line)
                        if not any(other.start() <= match.start() < other.end() for other in figures)]
        found += [(number, match[0].strip()) for match in sorted(figures, key=lambda match: match.start())]
    return found


def load_results(name: str, root: Path, cache: dict) -> dict:
    """The parsed results file ``name`` (a path relative to ``root``), read once."""
    if name not in cache:
        path = root / name
        if not path.is_file():
            raise SourceError(f"results file {name} not found")
        cache[name] = json.loads(path.read_text(encoding="utf-8"))
    return cache[name]


def check_document(document: Path, root: Path = ROOT, cache: dict | None = None, *, notes: list[str] | None = None,
                   awaiting: frozenset = AWAITING_REGENERATION) -> tuple[int, list[str]]:
    """(sourced figures found, one problem line per drifted, unsourced or unmarked figure).

    Given a ``notes`` list, a missing file or key of an ``awaiting`` results file goes there instead.
    """
    text, cache = document.read_text(encoding="utf-8"), {} if cache is None else cache
    visible = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    where_name = document.relative_to(root) if document.is_relative_to(root) else document.name
    problems, matches = [], list(FIGURE_SOURCE.finditer(text))
    for match in matches:
        figure, name, expression = match["figure"], match["file"], match["expression"]
        where = f"{where_name}:{line_of(text, match.start())}: figure {figure} from {name}: {expression}"
        if Path(name).name not in visible:
            problems.append(f"{where}: the text never names {name}")
        try:
            value = source_value(load_results(name, root, cache), expression)
        except SourceError as error:
            (notes if notes is not None and name in awaiting else problems).append(f"{where}: {error}")
            continue
        if not isinstance(value, (int, float)) or not figure_matches(figure, value):
            problems.append(f"{where}: printed {figure}, the file has {value!r}")
    problems += [f"{where_name}:{line}: figure {figure} names no results file (add a marker, or label it estimate)"
                 for line, figure in unmarked_figures(text)]
    return len(matches), problems


def check(root: Path = ROOT, awaiting: frozenset = AWAITING_REGENERATION) -> tuple[list[str], list[str]]:
    """(problems, notes) over every document; a cited file without provenance is a problem unless awaited."""
    problems, notes, cache, cited = [], [], {}, {}
    for document in documents(root):
        if document.is_file():
            problems += check_document(document, root, cache, notes=notes, awaiting=awaiting)[1]
            for match in FIGURE_SOURCE.finditer(document.read_text(encoding="utf-8")):
                cited.setdefault(match["file"], document.relative_to(root))
    for document in filter(Path.is_file, documents(root)):
        text = document.read_text(encoding="utf-8")
        if refresh_tables(text) != text:
            problems.append(f"{document.relative_to(root)}: a generated table is stale; run python -m bench.figures --write")
    for name, document in sorted(cited.items()):
        if name in cache and (missing := provenance_problems(cache[name])):
            line = f"{name} (cited by {document}) lacks provenance: {', '.join(missing)}"
            (notes if name in awaiting else problems).append(line)
    return problems, notes


def write(root: Path = ROOT) -> list[str]:
    """Rewrite every sourced figure from its results file at its printed precision; returns the changes made."""
    changes, cache = [], {}
    for document in filter(Path.is_file, documents(root)):
        text = document.read_text(encoding="utf-8")

        def refresh(match: re.Match) -> str:
            try:
                value = source_value(load_results(match["file"], root, cache), match["expression"])
            except SourceError:
                return match[0]  # --check names it
            if not isinstance(value, (int, float)) or (new := format_like(match["figure"], value)) == match["figure"]:
                return match[0]
            changes.append(f"{document.relative_to(root)}:{line_of(text, match.start())}: {match['figure']} -> {new}")
            return new + match[0][len(match["figure"]):]

        refreshed = refresh_tables(FIGURE_SOURCE.sub(refresh, text))
        if refreshed != text:
            document.write_text(refreshed, encoding="utf-8")
    return changes


def main(argv: list[str] | None = None) -> int:
    """``--check``: exit 1 listing every problem; ``--write``: refresh the figures from the results files."""
    parser = argparse.ArgumentParser(prog="python -m bench.figures", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="list every figure that is drifted, unsourced or unmarked")
    mode.add_argument("--write", action="store_true", help="rewrite the sourced figures from their results files")
    args = parser.parse_args(argv)
    for change in write() if args.write else []:
        print(change)
    problems, notes = check()
    for note in notes:
        print(f"note: {note} (awaiting regeneration)", file=sys.stderr)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
