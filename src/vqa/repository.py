"""A model repository: numbered versions of one model, as TensorFlow Serving lays them out.

``vqa serve --model REPO`` serves the highest complete version of a folder like::

    REPO/1/        a model directory written by `vqa train` (config.json, model.keras, ...)
    REPO/2.vqa     a packed model (`vqa pack`); a file named ``N`` or ``N.<anything>``
    REPO/3/        being copied: not served until it is complete and unchanged for one poll

A version is a child named by a positive integer without leading zeros: a folder named exactly
``N``, or a file named ``N`` or ``N.<ext>``. Other children (``3.old/``, ``.3.tmp``, ``README``)
are ignored. A folder is complete when it passes ``vqa.modeldir.check_model_dir``; a file when it
is not empty (its MANIFEST is checked when it is loaded). A watcher also requires a version's files
(names, sizes, mtimes: its :attr:`Version.fingerprint`) to be the same at two polls in a row, so a
copy in progress is not taken for a finished one.

This module only reads the folder (no Keras): :func:`scan` lists the versions, :func:`pick` says
which one to serve next; ``serving/versions.py`` loads, warms and swaps them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from vqa import artifacts
from vqa.config import CHECKPOINT
from vqa.errors import InputError
from vqa.modeldir import check_model_dir

_VERSION_NAME = re.compile(r"([1-9][0-9]{0,17})(\.[^/\\]+)?")


@dataclass(frozen=True)
class Version:
    """One numbered child of a repository, as one scan found it."""

    number: int
    path: Path  # the version folder or packed file
    fingerprint: tuple  # (relative name, size, mtime_ns) of every file: equal at two scans = not being written
    problem: str | None = None  # why it cannot be served as it is (incomplete), None when complete

    @property
    def name(self) -> str:
        """The version as ``X-Model-Version`` states it, e.g. ``"2"``."""
        return str(self.number)


def version_number(name: str, *, is_dir: bool) -> int | None:
    """The version a child named ``name`` holds, or None when it is no version (``3.old/``, ``.3.tmp``)."""
    match = _VERSION_NAME.fullmatch(name)
    if match is None or (is_dir and match.group(2)):
        return None
    return int(match.group(1))


def is_repository(path: Path) -> bool:
    """Whether ``path`` is a model repository: a folder without config.json holding at least one version."""
    path = Path(path)
    if not path.is_dir() or (path / artifacts.CONFIG_JSON).exists():
        return False
    return any(version_number(child.name, is_dir=child.is_dir()) is not None for child in _children(path))


def scan(repo: Path, *, checkpoint: str = CHECKPOINT) -> list[Version]:
    """Every version of ``repo``, highest first, each with its fingerprint and problem (None: complete).

    Two children for one number (``2/`` and ``2.vqa``) are both marked with a problem. Reads file
    names, sizes, mtimes and config.json only.
    """
    found: dict[int, list[Path]] = {}
    for child in _children(Path(repo)):
        number = version_number(child.name, is_dir=child.is_dir())
        if number is not None:
            found.setdefault(number, []).append(child)
    versions = []
    for number, paths in sorted(found.items(), reverse=True):
        for path in paths:
            problem = _problem(path, checkpoint) if len(paths) == 1 else (
                f"version {number} appears twice ({', '.join(sorted(p.name for p in paths))}); keep one")
            versions.append(Version(number, path, fingerprint(path), problem))
    return versions


def _children(path: Path) -> Iterable[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


def _problem(path: Path, checkpoint: str) -> str | None:
    """Why the version at ``path`` is not complete, or None."""
    if path.is_dir():
        try:
            check_model_dir(path, checkpoint=checkpoint)
        except InputError as error:
            return str(error)
        return None
    try:
        return None if path.stat().st_size > 0 else f"{path}: an empty file, not a packed model"
    except OSError as error:
        return f"{path}: cannot read ({error.strerror})"


def fingerprint(path: Path) -> tuple:
    """(relative name, size, mtime_ns) of every file under ``path`` (or of the file), sorted."""
    path = Path(path)
    if not path.is_dir():
        files = [(path, "")]
    else:
        files = [(Path(root) / name, os.path.relpath(Path(root) / name, path))
                 for root, _, names in os.walk(path) for name in names]
    entries = []
    for file, name in files:
        try:
            stat = file.stat()
        except OSError:  # removed while we looked: a changing version
            entries.append((name, -1, -1))
            continue
        entries.append((name, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(entries))


def pick(versions: Iterable[Version], *, current: int | None, previous: Mapping[int, tuple] | None = None,
         refused: Mapping[int, tuple] | None = None) -> Version | None:
    """The version to serve next, or None to keep ``current``.

    The highest version above ``current`` that is complete, unchanged since the ``previous`` scan
    (``{number: fingerprint}``; None at start-up: no wait) and not ``refused`` as it is now
    (``{number: fingerprint it failed with}``). While ``current`` is still in the repository nothing
    below it is taken; once it is gone (rolled back), the highest usable version below it is.
    """
    refused = refused or {}
    for version in sorted(versions, key=lambda v: v.number, reverse=True):
        if current is not None and version.number == current:
            return None
        stable = previous is None or previous.get(version.number) == version.fingerprint
        if version.problem is None and stable and refused.get(version.number) != version.fingerprint:
            return version
    return None


def check_repository(repo: Path, *, checkpoint: str = CHECKPOINT) -> Version:
    """The version ``vqa serve`` starts with: the highest complete one; InputError (one line) when there is none."""
    versions = scan(repo, checkpoint=checkpoint)
    chosen = pick(versions, current=None)
    if chosen is None:
        raise InputError(f"{repo}: no complete model version ({len(versions)} found; version {versions[0].name}: "
                         f"{versions[0].problem})")
    return chosen


def check_model_or_repository(path: Path, *, checkpoint: str = CHECKPOINT) -> Version | None:
    """Check ``path`` for serving: a repository's starting version, or None for a finished model directory.

    Raises:
        InputError: one line: a repository without a complete version, or a folder that is neither a
        model directory nor a repository (no version in it).
    """
    path = Path(path)
    if is_repository(path):
        return check_repository(path, checkpoint=checkpoint)
    try:
        check_model_dir(path, checkpoint=checkpoint)
    except InputError as error:
        if path.is_dir() and not (path / artifacts.CONFIG_JSON).exists():
            raise InputError(f"{error}; nor is it a model repository (no version {path / '1'}, "
                             f"{path / '2'}, ... in it)") from None
        raise
    return None
