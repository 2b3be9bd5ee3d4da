"""A packed model: one verifiable file holding a model directory, and models by path or URL.

``vqa pack`` writes a plain (uncompressed) POSIX tar whose members are, in order::

    MANIFEST         JSON: {"kind", "format", "checkpoint", "created", "vqa_keras",
                            "files": [{"name", "size", "sha256"}, ...]} for every other member
    MODEL_CARD.md    generated from config.json, the latest evaluation report and the files' hashes
    model.keras      the chosen checkpoint (`--checkpoint last|best`)
    config.json  vocabulary.json  answers.json  [history.csv  history.json  evaluation_report.json]

Opening one (:func:`open_packed`) reads it once, front to back: every member must be a plain file
with a plain name that the MANIFEST lists, of the declared size and SHA-256. It is extracted into a
temporary folder of the cache (``VQA_CACHE_DIR``, else ``$XDG_CACHE_HOME/vqa``, else
``~/.cache/vqa``), checked, then renamed to ``models/<SHA-256 of the packed file>``, so a folder
there is whole or absent and is reused while it still matches its MANIFEST.

:func:`resolve_model` is what every ``--model`` takes: a model directory, a packed file, or an
``http(s)://`` / ``file://`` URL ending in ``#sha256=<hex>`` (downloaded into the cache, checked
before use). Light: no Keras, no TensorFlow; packing never loads the model.
"""

from __future__ import annotations

import datetime
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

from vqa import __version__, artifacts, modeldir
from vqa.atomic import atomic_path
from vqa.config import CHECKPOINT
from vqa.errors import InputError
from vqa.provenance import git_commit
from vqa.results import load_report

KIND = "vqa-packed-model"
FORMAT = 1
MANIFEST = "MANIFEST"
MODEL_CARD = "MODEL_CARD.md"
REPORT_FILE = "evaluation_report.json"  # the latest `vqa evaluate --report` file, under one name
OPTIONAL_FILES = (artifacts.HISTORY_CSV, artifacts.HISTORY_JSON)
REQUIRED_FILES = (artifacts.MODEL_FILE, *modeldir.INFERENCE_FILES)
CACHE_ENV = "VQA_CACHE_DIR"
MODELS_FOLDER = "models"
URL_SCHEMES = ("http", "https", "file")
DOWNLOAD_TIMEOUT_S = 60
_CHUNK = 1 << 20
_MAX_MANIFEST_BYTES = 1 << 20
_MEMBER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_DIGEST = re.compile(r"sha256=([0-9a-fA-F]{64})")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


# --------------------------------------------------------------------------- hashing and the cache
def sha256_file(path: Path) -> str:
    """The SHA-256 (hex) of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """Where packed and downloaded models are extracted: ``VQA_CACHE_DIR``, else the user's cache folder + vqa."""
    if environ.get(CACHE_ENV, "").strip():
        return Path(environ[CACHE_ENV]).expanduser()
    base = environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".cache") / "vqa"


# --------------------------------------------------------------------------- packing
def pack_model(model_dir: Path, out: Path, *, checkpoint: str = CHECKPOINT) -> Path:
    """Write ``model_dir`` (a finished run) as one packed file at ``out``, atomically.

    Args:
        model_dir: a model directory written by ``vqa train``.
        out: the file to write (replaced if present).
        checkpoint: "last" (model.keras) or "best" (best.keras): stored as model.keras.
    Returns:
        ``out``.
    Raises:
        InputError: a directory that is not a finished run, a missing checkpoint, ``out`` a folder.
    """
    model_dir, out = Path(model_dir), Path(out)
    sources = _pack_sources(model_dir, checkpoint)
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give --out a file name, e.g. {out / 'model.vqa.tar'}")
    if any(out.resolve() == path.resolve() for path in sources.values()):
        raise InputError(f"{out}: would overwrite a file of the model directory; choose another --out")
    files = {name: (path.stat().st_size, sha256_file(path)) for name, path in sources.items()}
    report_source = sources.get(REPORT_FILE)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    card = model_card(modeldir.read_config(model_dir), checkpoint=checkpoint, created=created,
                      commit=git_commit(), vocabulary_sha256=files[artifacts.VOCABULARY_JSON][1],
                      report=load_report(report_source) if report_source else None,
                      report_name=report_source.name if report_source else None).encode("utf-8")
    files = {MODEL_CARD: (len(card), hashlib.sha256(card).hexdigest()), **files}
    manifest = {"kind": KIND, "format": FORMAT, "checkpoint": checkpoint, "created": created,
                "vqa_keras": __version__,
                "files": [{"name": name, "size": size, "sha256": digest} for name, (size, digest) in files.items()]}
    with atomic_path(out) as temporary:
        _write_tar(temporary, manifest, card, sources)
    return out


def _pack_sources(model_dir: Path, checkpoint: str) -> dict[str, Path]:
    """{member name: file} of what a packed ``model_dir`` holds (checked to be a finished run)."""
    sources = {artifacts.MODEL_FILE: modeldir.check_model_dir(model_dir, checkpoint=checkpoint)}
    sources |= {name: model_dir / name for name in (*modeldir.INFERENCE_FILES, *OPTIONAL_FILES)
                if (model_dir / name).is_file()}
    report = latest_report(model_dir)
    if report is not None:
        sources[REPORT_FILE] = report
    return sources


def latest_report(model_dir: Path) -> Path | None:
    """The newest ``vqa evaluate --report`` file at the top of ``model_dir``, or None."""
    known = {*modeldir.INFERENCE_FILES, artifacts.HISTORY_JSON}
    candidates = sorted((path for path in Path(model_dir).glob("*.json") if path.name not in known and path.is_file()),
                        key=lambda path: path.stat().st_mtime, reverse=True)
    for path in candidates:
        try:
            load_report(path)
        except InputError:  # a results file or some other JSON: not a report
            continue
        return path
    return None


def _write_tar(path: Path, manifest: dict, card: bytes, sources: Mapping[str, Path]) -> None:
    """The tar: MANIFEST, MODEL_CARD.md, then the files in manifest order (plain files, mode 644)."""
    mtime = int(datetime.datetime.now(datetime.timezone.utc).timestamp())
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((MANIFEST, json.dumps(manifest, indent=1).encode("utf-8") + b"\n"), (MODEL_CARD, card)):
            tar.addfile(_member(name, len(data), mtime), io.BytesIO(data))
        for entry in manifest["files"][1:]:
            with open(sources[entry["name"]], "rb") as f:
                tar.addfile(_member(entry["name"], entry["size"], mtime), f)


def _member(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    return info


# --------------------------------------------------------------------------- the model card
_MODEL_NAMES = {"mlp": "the tutorial's bag-of-words MLP", "lstm": "the tutorial's LSTM",
                "san": "a stacked attention network", "topdown": "a top-down attention model"}


def model_card(config: dict, *, checkpoint: str, created: str, commit: str, vocabulary_sha256: str,
               report: dict | None = None, report_name: str | None = None) -> str:
    """MODEL_CARD.md: what the model is, what it was trained on, how it scores, what it needs.

    Args:
        config: config.json of the model directory (as ``modeldir.read_config`` returns it).
        checkpoint: the checkpoint packed ("last" or "best").
        created, commit: the packing date (ISO 8601) and the vqa-keras commit.
        vocabulary_sha256: SHA-256 of vocabulary.json, which stands in for the word-vector table.
        report: the latest ``vqa evaluate --report`` record, or None; report_name: its file name.
    """
    model = config["model"]
    lines = [f"# Model card: {model} ({_MODEL_NAMES.get(model, 'a VQA model')})", "",
             f"Packed by vqa-keras {__version__} (commit `{commit}`) on {created}, from the `{checkpoint}` checkpoint "
             f"({modeldir.CHECKPOINTS.get(checkpoint, '?')}, stored here as {artifacts.MODEL_FILE}). "
             f"`{MANIFEST}` lists the SHA-256 and size of every file.", "",
             *_card_data(config), *_card_accuracy(report, report_name), *_card_vectors(config, vocabulary_sha256),
             *_card_cnn(config), *_card_training(config)]
    return "\n".join(lines) + "\n"


def _card_data(config: dict) -> list[str]:
    return ["## Data", "",
            f"Trained on the `{artifacts.TRAIN_SPLIT}` split of a `vqa prepare` folder, validated on "
            f"`{artifacts.VAL_SPLIT}` where it was prepared: {config['num_answers']} answer classes (the most "
            f"frequent answers), a vocabulary of {config['vocabulary_size']} words, questions cut at "
            f"{config['max_question_length']} tokens. config.json does not record the dataset's folder or "
            "VQA version.", ""]


def _card_accuracy(report: dict | None, report_name: str | None) -> list[str]:
    if report is None:
        return ["## Accuracy", "", "Not evaluated: the model directory held no `vqa evaluate --report` file.", ""]
    scored = f", checkpoint `{report['checkpoint']}`" if report.get("checkpoint") else ""
    rows = [f"| overall | {report['overall']:.2f} |"]
    rows += [f"| {name} | {value:.2f} |" for name, value in report["perAnswerType"].items()]
    return ["## Accuracy", "",
            f"Official VQA accuracy (%) from `{report_name}` (stored as `{REPORT_FILE}`{scored}), "
            f"{len(report['perQuestion'])} questions:", "", "| answer type | accuracy |", "|---|---|", *rows, ""]


def _card_vectors(config: dict, vocabulary_sha256: str) -> list[str]:
    name = config.get("spacy_model") or "not recorded"
    table = config.get("word_vectors_sha256")
    table = f"`{table}`" if table else "not recorded (prepared data older than the record; re-run `vqa prepare`)"
    return ["## Word vectors", "",
            "| | |", "|---|---|",
            f"| spaCy model (name-version, as `vqa prepare` recorded it) | `{name}` |",
            f"| SHA-256 of its vector table (`vqa.text.vectors_sha256`) | {table} |",
            f"| SHA-256 of `{artifacts.VOCABULARY_JSON}` (the words the model's embeddings hold, in order) | "
            f"`{vocabulary_sha256}` |", "",
            "Questions are tokenised with that spaCy model when asked; the embeddings themselves are inside the "
            "model file.", ""]


def _card_cnn(config: dict) -> list[str]:
    from vqa.feature_file import CNNIdentity  # h5py: only packing needs it here

    identity = CNNIdentity.from_record(config.get("cnn_identity"), source=artifacts.CONFIG_JSON)
    weights, layout, size = config.get("cnn_weights"), config["image_layout"], config["image_size"]
    layer = "fc7 vectors" if layout == artifacts.LAYOUT_VECTOR else "block5_pool grids"
    shape = " x ".join(str(n) for n in config["image_feature_shape"])
    sha256 = (f"`{identity.sha256}`" if identity.sha256 else "not recorded" if identity.kind in _UNHASHED_FILES
              else "none (no weights file)")
    lines = ["## Image features", "",
             f"VGG16 {layer} (`{layout}` layout, feature shape {shape}) of images resized to {size} x {size}.", "",
             "| CNN weights | |", "|---|---|", f"| name | {identity.name} (`{identity.kind}`) |",
             f"| SHA-256 | {sha256} |", f"| input size | {size} x {size} |", f"| layout | `{layout}` ({layer}) |",
             f"| `--cnn-weights` for new images | {f'`{weights}`' if weights else 'not recorded'} |", ""]
    return lines + [_CARD_PAIRING.get(identity.kind, _CARD_CHECKED), ""]


# Kinds whose missing SHA-256 means "not recorded" (Keras' file was not in its cache), not "no weights file".
_UNHASHED_FILES = (artifacts.CNN_KERAS_IMAGENET, artifacts.CNN_LOCAL, artifacts.CNN_UNKNOWN)
_CARD_PAIRING = {
    artifacts.CNN_KARPATHY: "The tutorial's pairing: trained on Karpathy's Caffe VGG16 fc7, asked with Keras' ImageNet "
                            "VGG16 (`--cnn-weights imagenet`) for new images.",
    artifacts.CNN_RANDOM: "Random weights: for tests and demos only; ask with `--cnn-weights random`.",
    artifacts.CNN_UNKNOWN: "Not recorded (a model directory from before config.json recorded the weights' identity): "
                           "ask and serve with the `--cnn-weights` its features used; nothing can check it.",
}
_CARD_CHECKED = ("Ask and serve with the same weights: `vqa ask`, `vqa serve` and `vqa evaluate --model` refuse "
                 "weights that clearly differ.")


def _card_training(config: dict) -> list[str]:
    rows = [f"| `{name}` | {json.dumps(value)} |" for name, value in sorted(config["train"].items())]
    return ["## Training configuration", "", f"Written by Keras {config.get('keras_version') or 'unknown'}.", "",
            "| setting | value |", "|---|---|", *rows]


# --------------------------------------------------------------------------- opening
def open_packed(path: Path, *, cache: Path | None = None, digest: str | None = None) -> Path:
    """The model directory of a packed file: its cached extraction if intact, else a fresh, checked one.

    Args:
        path: a file written by :func:`pack_model`.
        cache: the cache folder (default: :func:`cache_dir`).
        digest: the file's SHA-256 when already known (a checked download), else it is computed.
    Returns:
        ``<cache>/models/<SHA-256 of the file>``, a model directory with MANIFEST and MODEL_CARD.md.
    Raises:
        InputError: one line naming ``path``: corrupt, truncated, not a packed model, a manifest mismatch,
        a member path leaving the folder or a link, a member larger than declared. Nothing is left behind.
    """
    path = Path(path)
    models = (cache or cache_dir()) / MODELS_FOLDER
    try:
        target = models / (digest or sha256_file(path))
    except OSError as error:
        raise InputError(f"{path}: cannot read the packed model ({error.strerror or error})") from None
    if is_intact(target):
        return target
    models.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=models))
    try:
        extract_packed(path, staging)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the checked ``staging`` folder to ``target``; a broken ``target`` is moved aside first,
    an intact one (another process was quicker) is kept."""
    if target.exists():
        if is_intact(target):
            return
        aside = Path(tempfile.mkdtemp(prefix=".broken-", dir=target.parent))
        os.replace(target, aside / "model")
        shutil.rmtree(aside, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        if not is_intact(target):
            raise


def is_intact(folder: Path) -> bool:
    """Whether ``folder`` is a whole extraction: its MANIFEST's every file there, of that size and SHA-256."""
    try:
        manifest = _parse_manifest((folder / MANIFEST).read_bytes(), source=folder)
    except (OSError, InputError):
        return False
    for entry in manifest["files"]:
        file = folder / entry["name"]
        if not file.is_file() or file.is_symlink() or file.stat().st_size != entry["size"]:
            return False
        if sha256_file(file) != entry["sha256"]:
            return False
    return True


def extract_packed(path: Path, out_dir: Path) -> dict:
    """Check a packed file member by member while writing its files into ``out_dir`` (an empty folder).

    Returns:
        The MANIFEST record.
    Raises:
        InputError: naming ``path`` and the problem; ``out_dir`` may then hold part of the files.
    """
    path, out_dir = Path(path), Path(out_dir)
    try:
        with open(path, "rb") as f:
            try:
                tar = tarfile.open(fileobj=f, mode="r:")
            except tarfile.TarError as error:
                raise InputError(f"{path}: not a packed model, or a corrupt one (not a tar file: {error}); "
                                 "write one with 'vqa pack'") from None
            with tar:
                return _extract_members(tar, path, out_dir)
    except OSError as error:
        raise InputError(f"{path}: cannot read or extract the packed model ({error.strerror or error})") from None
    except (tarfile.TarError, EOFError) as error:
        raise InputError(f"{path}: corrupt or truncated packed model ({error}); download or pack it again") from None


def _extract_members(tar: tarfile.TarFile, path: Path, out_dir: Path) -> dict:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isreg():
        raise InputError(f"{path}: not a packed model (no {MANIFEST} first); write one with 'vqa pack'")
    if first.size > _MAX_MANIFEST_BYTES:
        raise InputError(f"{path}: not a packed model ({MANIFEST} of {first.size} bytes); write one with 'vqa pack'")
    manifest = _parse_manifest(tar.extractfile(first).read(), source=path)
    declared = {entry["name"]: entry for entry in manifest["files"]}
    seen = set()
    while (member := tar.next()) is not None:
        entry = _check_member(member, declared, seen, path)
        _copy_member(tar, member, entry, out_dir / member.name, path)
        seen.add(member.name)
    missing = [name for name in declared if name not in seen]
    if missing:
        raise InputError(f"{path}: truncated or incomplete packed model ({missing[0]} is in the {MANIFEST} but not "
                         f"in the file, {len(missing)} missing); download or pack it again")
    (out_dir / MANIFEST).write_bytes(json.dumps(manifest, indent=1).encode("utf-8") + b"\n")
    return manifest


def _check_member(member: tarfile.TarInfo, declared: Mapping[str, dict], seen: set, path: Path) -> dict:
    """The manifest entry of ``member``; InputError for a path leaving the folder, a link or other non-file,
    a name the manifest lacks or repeats, or a size other than declared."""
    name = member.name
    _check_name(name, source=path)
    if member.issym() or member.islnk():
        raise InputError(f"{path}: member {name!r} is a link; a packed model holds only plain files")
    if not member.isreg():
        raise InputError(f"{path}: member {name!r} is not a plain file; a packed model holds only plain files")
    if name not in declared or name in seen:
        what = "appears twice" if name in seen else f"is not in the {MANIFEST}"
        raise InputError(f"{path}: manifest mismatch: member {name!r} {what}; the file was altered, pack it again")
    if member.size != declared[name]["size"]:
        larger = "larger" if member.size > declared[name]["size"] else "smaller"
        raise InputError(f"{path}: member {name!r} is {member.size} bytes, {larger} than the {declared[name]['size']} "
                         f"the {MANIFEST} declares; the file was altered, pack it again")
    return declared[name]


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, entry: dict, out: Path, path: Path) -> None:
    """Write one member to ``out`` (a new file), at most its declared size, checking its SHA-256."""
    digest, left = hashlib.sha256(), entry["size"]
    source = tar.extractfile(member)
    with open(out, "xb") as f:
        while left > 0:
            chunk = source.read(min(_CHUNK, left))
            if not chunk:
                raise InputError(f"{path}: truncated packed model ({member.name} ends early); "
                                 "download or pack it again")
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    if digest.hexdigest() != entry["sha256"]:
        raise InputError(f"{path}: manifest mismatch: the SHA-256 of {member.name} differs from the {MANIFEST}'s; "
                         "the file is corrupt, download or pack it again")


def _check_name(name: str, *, source: Path) -> None:
    """InputError unless ``name`` is a plain file name (no folder, no ``..``, not absolute)."""
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or ".." in parts or "\\" in name or re.match(r"[A-Za-z]:", name):
        raise InputError(f"{source}: member path {name!r} leaves the extraction folder; refusing the file")
    if not _MEMBER_NAME.fullmatch(name):
        raise InputError(f"{source}: member {name!r} is not a plain file name; a packed model holds only "
                         "top-level files")


def _parse_manifest(data: bytes, *, source: Path) -> dict:
    """The MANIFEST record, checked: kind, format, and files of plain names, sizes and SHA-256s."""
    try:
        manifest = json.loads(data.decode("utf-8"))
        files = manifest["files"]
        ok = manifest["kind"] == KIND and all(
            isinstance(e["name"], str) and isinstance(e["size"], int) and e["size"] >= 0
            and re.fullmatch(r"[0-9a-f]{64}", e["sha256"]) for e in files)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise InputError(f"{source}: not a packed model (unreadable {MANIFEST}); write one with 'vqa pack'")
    if not isinstance(manifest.get("format"), int) or manifest["format"] > FORMAT:
        raise InputError(f"{source}: packed model format {manifest.get('format')!r} is newer than this vqa-keras "
                         f"reads ({FORMAT}); upgrade vqa-keras")
    names = [entry["name"] for entry in files]
    for name in names:
        _check_name(name, source=source)
    missing = [name for name in REQUIRED_FILES if name not in names]
    if missing or len(set(names)) != len(names) or MANIFEST in names:
        raise InputError(f"{source}: not a packed model ({MANIFEST} lacks {', '.join(missing) or 'unique names'}); "
                         "write one with 'vqa pack'")
    return manifest


# --------------------------------------------------------------------------- by path or URL
def resolve_model(spec: str | Path, *, insecure_no_digest: bool = False, cache: Path | None = None) -> Path:
    """The model directory ``spec`` names: a model directory, a packed file, or a URL with ``#sha256=<hex>``.

    Args:
        spec: a folder (returned as is, checked where it is used), a packed file (opened into the cache),
            or an ``http://``, ``https://`` or ``file://`` URL of a packed file ending in ``#sha256=<hex>``.
        insecure_no_digest: accept a URL without a digest (local use only: nothing checks what arrives).
        cache: the cache folder (default: :func:`cache_dir`).
    Raises:
        InputError: one line for a bad URL, digest or packed file.
    """
    text = str(spec)
    if is_url(text):
        return fetch_model(text, insecure_no_digest=insecure_no_digest, cache=cache)
    path = Path(text)
    return open_packed(path, cache=cache) if path.is_file() else path


def is_url(text: str) -> bool:
    """Whether ``text`` starts like a URL (``scheme://``) rather than a path."""
    return bool(_URL.match(str(text)))


def split_digest(url: str) -> tuple[str, str | None]:
    """(the URL without its fragment, the lower-case SHA-256 of ``#sha256=<hex>`` or None).

    Raises:
        InputError: a scheme other than http, https or file, or a fragment that is not a SHA-256.
    """
    base, fragment = urllib.parse.urldefrag(url)
    scheme = urllib.parse.urlsplit(base).scheme.lower()
    if scheme not in URL_SCHEMES:
        raise InputError(f"{url}: unsupported URL scheme {scheme!r}; use http://, https:// or file://")
    if not fragment:
        return base, None
    match = _DIGEST.fullmatch(fragment)
    if match is None:
        raise InputError(f"{url}: the fragment must be '#sha256=' and 64 hex digits (sha256sum FILE)")
    return base, match.group(1).lower()


def fetch_model(url: str, *, insecure_no_digest: bool = False, cache: Path | None = None) -> Path:
    """The model directory of the packed file at ``url``: cached if intact, else downloaded, checked, opened.

    Raises:
        InputError: no digest (unless ``insecure_no_digest``), an unreachable URL, a truncated download,
        a digest mismatch or a bad packed file; nothing is left in the cache.
    """
    base, digest = split_digest(url)
    if digest is None and not insecure_no_digest:
        raise InputError(f"{url}: no '#sha256=<hex>' digest; append the packed file's SHA-256 (sha256sum FILE), "
                         "or pass --insecure-no-digest for local use")
    cache = cache or cache_dir()
    if digest is not None and is_intact(cache / MODELS_FOLDER / digest):
        return cache / MODELS_FOLDER / digest
    (cache / MODELS_FOLDER).mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".download-", dir=cache / MODELS_FOLDER)
    os.close(handle)
    try:
        received = download(base, Path(temporary))
        if digest is not None and received != digest:
            raise InputError(f"{url}: digest mismatch: the download's SHA-256 is {received}; nothing was kept "
                             "(a changed or corrupt file, or a wrong digest)")
        return open_packed(Path(temporary), cache=cache, digest=received)
    finally:
        Path(temporary).unlink(missing_ok=True)


def download(url: str, out: Path) -> str:
    """Copy ``url`` to ``out``, hashing on the way; the SHA-256 (hex) of what arrived.

    Raises:
        InputError: unreachable, an HTTP error, or fewer bytes than the server announced.
    """
    digest, size = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(out, "wb") as f:
            expected = response.headers.get("Content-Length")
            for chunk in _chunks(response):
                digest.update(chunk)
                f.write(chunk)
                size += len(chunk)
    except urllib.error.HTTPError as error:
        raise InputError(f"{url}: HTTP {error.code} {error.reason}; check the URL") from None
    except urllib.error.URLError as error:
        raise InputError(f"{url}: unreachable ({error.reason}); check the URL and the network") from None
    except (OSError, ValueError, http.client.HTTPException) as error:  # a reset, an IncompleteRead, a timeout
        raise InputError(f"{url}: download failed after {size} bytes ({error or type(error).__name__}); "
                         "try again") from None
    if expected is not None and expected.isdigit() and int(expected) != size:
        raise InputError(f"{url}: truncated download ({size} of {int(expected)} bytes); nothing was kept, try again")
    return digest.hexdigest()


def _chunks(response) -> Iterator[bytes]:
    while chunk := response.read(_CHUNK):
        yield chunk
