"""Atomic outputs: every file a stage writes appears whole or not at all.

One home for writing via a temporary file + rename (text, JSON, HDF5: anything a
callback or a ``with atomic_path(...)`` block can write) and for a staging folder whose
files move into place together (`vqa prepare`, whose outputs only make sense as a set). A reader never sees a
half-written file, and a failed write leaves the previous file untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; rename it to ``path`` if the block succeeds.

    The temporary name keeps ``path``'s suffix (Keras insists on ``.keras``). On any error
    the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary path)`` in ``path``'s folder, then rename the result to ``path``."""
    with atomic_path(path) as temporary:
        write(temporary)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_json_atomically(path: Path, data, *, indent: int | None = None) -> None:
    """Write ``data`` as UTF-8 JSON (non-ASCII kept as is, newline-terminated) to ``path`` atomically.

    Args:
        path: Path of the JSON file to (over)write.
        data: anything ``json.dumps`` accepts.
        indent: None for compact JSON, else the indent width.
    """
    write_text_atomically(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


@contextmanager
def staging_folder(out_dir: Path, *, prefix: str = ".staging-") -> Iterator[Path]:
    """A hidden folder inside ``out_dir`` whose files move into ``out_dir`` only if the block succeeds.

    For outputs that only make sense together: on failure none of them replaces an older
    one, and an ``out_dir`` this call created is removed again.
    """
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir))
    try:
        yield staging
        for path in staging.iterdir():
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
