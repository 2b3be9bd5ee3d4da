"""Every command shown in the README and docs/ still parses with today's CLI.

Documentation drifts when a flag is renamed: these tests extract the fenced shell
blocks of README.md, docs/*.md and serving/README.md, and feed every `vqa ...` (or
`python -m vqa ...`) line to the real argument parser; gunicorn lines must name an
importable app factory. Usage notation (`[--flag VALUE]`, `a|b`) is for prose, not
fenced commands, so a fenced line that uses it fails here too.
"""

from __future__ import annotations

import importlib
import re
import shlex
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
