"""vqa.package: `vqa pack`, opening a packed model into the cache, and models by path or URL.

Pure Python over a fake model directory of small files (packing never loads Keras), and a
local HTTP server on 127.0.0.1 for the URL cases; the last tests ask a real model (slow).
"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import re
import tarfile
import threading
from pathlib import Path

import pytest

from vqa import artifacts, modeldir
from vqa.errors import InputError
from vqa.package import (MANIFEST, MODEL_CARD, REPORT_FILE, cache_dir, fetch_model, is_intact, latest_report,
                         open_packed, pack_model, resolve_model, sha256_file, split_digest)
from vqa.results import write_report

TRAIN = {"model": "mlp", "epochs": 2, "batch_size": 32, "hidden_units": 16}
REPORT = {"checkpoint": "last", "overall": 61.25, "perAnswerType": {"yes/no": 80.0, "number": 30.5, "other": 50.0},
          "perQuestionType": {"what color is the": 55.0}, "perQuestion": {"1": 100.0, "2": 22.5}}


# --------------------------------------------------------------------------- fixtures
def fake_model_dir(root: Path, *, status: str = "finished", cnn_weights: str | None = "random",
                   cnn_identity: dict | None = None, best: bool = True, word_vectors_sha256: str | None = None) -> Path:
    """A model directory of small files, as `vqa train` lays it out (model files are random bytes)."""
    root.mkdir(parents=True, exist_ok=True)
    config = modeldir.make_config(model="mlp", status=status, train=TRAIN, max_question_length=30,
                                  spacy_model="en_core_web_md-3.7.1", num_answers=6, vocabulary_size=12,
                                  image_layout="vector", image_size=224, image_feature_shape=[64],
                                  cnn_weights=cnn_weights, cnn_identity=cnn_identity, keras_version="3.15.1",
                                  word_vectors_sha256=word_vectors_sha256)
    modeldir.write_config(root, config)
    (root / artifacts.VOCABULARY_JSON).write_text(json.dumps(["<pad>", "<oov>", "what", "color"]))
    (root / artifacts.ANSWERS_JSON).write_text(json.dumps(["blue", "red"]))
    (root / artifacts.MODEL_FILE).write_bytes(os.urandom(300_000))
    if best:
        (root / artifacts.BEST_MODEL_FILE).write_bytes(os.urandom(200_000))
    (root / artifacts.HISTORY_CSV).write_text("epoch,loss\n0,1.5\n1,1.2\n")
    (root / artifacts.HISTORY_JSON).write_text(json.dumps({"loss": [1.5, 1.2]}))
    return root


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return fake_model_dir(tmp_path / "mlp")


@pytest.fixture
def packed(model_dir, tmp_path) -> Path:
    return pack_model(model_dir, tmp_path / "mlp.vqa.tar")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """The cache folder, also as VQA_CACHE_DIR (what every command reads)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("VQA_CACHE_DIR", str(folder))
    return folder


def files_under(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if not path.is_dir()) if folder.exists() else []


def members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def read_member(path: Path, name: str) -> bytes:
    with tarfile.open(path) as tar:
        return tar.extractfile(name).read()


# --------------------------------------------------------------------------- packing
def test_a_packed_model_holds_the_inference_files_a_card_and_a_manifest_of_them(packed, model_dir):
    names = members(packed)
    assert names[:2] == [MANIFEST, MODEL_CARD]
    assert set(names[2:]) == {artifacts.MODEL_FILE, artifacts.CONFIG_JSON, artifacts.VOCABULARY_JSON,
                              artifacts.ANSWERS_JSON, artifacts.HISTORY_CSV, artifacts.HISTORY_JSON}
    manifest = json.loads(read_member(packed, MANIFEST))
    assert manifest["kind"] == "vqa-packed-model" and manifest["checkpoint"] == "last"
    assert [entry["name"] for entry in manifest["files"]] == names[1:]
    for entry in manifest["files"]:
        data = read_member(packed, entry["name"])
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"])
    assert read_member(packed, artifacts.MODEL_FILE) == (model_dir / artifacts.MODEL_FILE).read_bytes()


def test_the_card_states_data_vectors_cnn_training_and_not_evaluated(packed, model_dir):
    card = read_member(packed, MODEL_CARD).decode()
    vocabulary_sha = sha256_file(model_dir / artifacts.VOCABULARY_JSON)
    for text in ("# Model card: mlp", "`train2014`", "6 answer classes", "12 words", "Not evaluated",
                 "en_core_web_md-3.7.1", vocabulary_sha, "unrecorded VGG16 weights", "224 x 224", "`vector` layout",
                 "Keras 3.15.1", "| `hidden_units` | 16 |", "`last` checkpoint", "commit `"):
        assert text in card, text


def test_the_card_names_the_word_vector_table_by_its_hash(tmp_path):
    recorded = pack_model(fake_model_dir(tmp_path / "a", word_vectors_sha256="ef" * 32), tmp_path / "a.tar")
    assert f"| SHA-256 of its vector table (`vqa.text.vectors_sha256`) | `{'ef' * 32}` |" in (
        read_member(recorded, MODEL_CARD).decode())
    older = pack_model(fake_model_dir(tmp_path / "b"), tmp_path / "b.tar")
    assert "| SHA-256 of its vector table (`vqa.text.vectors_sha256`) | not recorded" in (
        read_member(older, MODEL_CARD).decode())


@pytest.mark.parametrize("weights, identity, texts", [
    ("imagenet", {"kind": "karpathy-caffe-vgg16", "sha256": None},
     ["| name | Karpathy's Caffe VGG16 fc7 (vgg_feats.mat) (`karpathy-caffe-vgg16`) |", "| SHA-256 | none (no weights",
      "The tutorial's pairing: trained on Karpathy's Caffe VGG16 fc7, asked with Keras' ImageNet VGG16"]),
    ("imagenet", {"kind": "keras-imagenet-vgg16", "sha256": "ab" * 32},
     ["| name | Keras' ImageNet VGG16 (`keras-imagenet-vgg16`) |", f"| SHA-256 | `{'ab' * 32}` |", "refuse"]),
    ("/w/vgg16.h5", {"kind": "local", "sha256": "cd" * 32},
     ["| name | a local VGG16 weights file (`local`) |", f"`{'cd' * 32}`", "| `--cnn-weights` for new images | "
      "`/w/vgg16.h5` |", "| input size | 224 x 224 |", "| layout | `vector` (fc7 vectors) |"]),
    ("random", {"kind": "random", "sha256": None}, ["| name | random VGG16 weights (`random`) |", "tests and demos"]),
    (None, None, ["(`unknown`)", "| SHA-256 | not recorded", "Not recorded", "| `--cnn-weights` for new images | not recorded"]),
], ids=["karpathy", "keras", "local", "random", "unknown"])
def test_the_card_names_the_cnn_weights(tmp_path, weights, identity, texts):
    out = pack_model(fake_model_dir(tmp_path / "m", cnn_weights=weights, cnn_identity=identity), tmp_path / "m.tar")
    card = read_member(out, MODEL_CARD).decode()
    for text in texts:
        assert text in card, text
    assert ("tutorial's pairing" in card) == (identity is not None and identity["kind"] == "karpathy-caffe-vgg16")


def test_the_latest_report_is_packed_and_its_accuracy_is_on_the_card(model_dir, tmp_path):
    write_report(model_dir / "report_old.json", {**REPORT, "overall": 1.0})
    os.utime(model_dir / "report_old.json", (1, 1))
    write_report(model_dir / "report_val.json", REPORT)
    (model_dir / "results.json").write_text(json.dumps([{"question_id": 1, "answer": "red"}]))  # not a report
    assert latest_report(model_dir) == model_dir / "report_val.json"
    out = pack_model(model_dir, tmp_path / "m.tar")
    assert json.loads(read_member(out, REPORT_FILE)) == REPORT
    card = read_member(out, MODEL_CARD).decode()
    for text in ("`report_val.json`", "| overall | 61.25 |", "| yes/no | 80.00 |", "| number | 30.50 |",
                 "| other | 50.00 |", "2 questions"):
        assert text in card, text


def test_checkpoint_best_is_packed_as_model_keras(model_dir, tmp_path):
    out = pack_model(model_dir, tmp_path / "best.tar", checkpoint="best")
    assert read_member(out, artifacts.MODEL_FILE) == (model_dir / artifacts.BEST_MODEL_FILE).read_bytes()
    assert artifacts.BEST_MODEL_FILE not in members(out)
    assert json.loads(read_member(out, MANIFEST))["checkpoint"] == "best"


@pytest.mark.parametrize("case, message", [
    ("running", "training has not finished"),
    ("no best", "no best.keras"),
    ("not a model", "not a finished model directory"),
    ("out is a folder", "is a folder"),
])
def test_pack_refuses_in_one_line_and_writes_nothing(tmp_path, case, message):
    model = fake_model_dir(tmp_path / "m", status="running" if case == "running" else "finished",
                           best=case != "no best")
    if case == "not a model":
        (model / artifacts.CONFIG_JSON).unlink()
    out = tmp_path / ("folder" if case == "out is a folder" else "m.tar")
    if case == "out is a folder":
        out.mkdir()
    with pytest.raises(InputError, match=re.escape(message)):
        pack_model(model, out, checkpoint="best" if case == "no best" else "last")
    assert not out.is_file() and not list(tmp_path.glob(".m.tar*"))


# --------------------------------------------------------------------------- opening
def test_opening_extracts_a_checked_model_directory_into_the_cache(packed, model_dir, cache):
    opened = open_packed(packed)
    assert opened == cache / "models" / sha256_file(packed)
    assert modeldir.check_model_dir(opened) == opened / artifacts.MODEL_FILE
    for name in (artifacts.MODEL_FILE, artifacts.CONFIG_JSON, artifacts.VOCABULARY_JSON, artifacts.ANSWERS_JSON):
        assert (opened / name).read_bytes() == (model_dir / name).read_bytes()
    assert (opened / MODEL_CARD).is_file() and is_intact(opened)
    assert [path.name for path in (cache / "models").iterdir()] == [opened.name]  # no temporary left


def test_an_intact_extraction_is_reused_and_a_damaged_one_replaced(packed, cache):
    opened = open_packed(packed)
    stamp = (opened / artifacts.MODEL_FILE).stat().st_mtime_ns
    assert open_packed(packed) == opened and (opened / artifacts.MODEL_FILE).stat().st_mtime_ns == stamp
    (opened / artifacts.ANSWERS_JSON).write_text('["tampered"]')
    assert not is_intact(opened)
    assert open_packed(packed) == opened and is_intact(opened)
    (opened / artifacts.MODEL_FILE).unlink()
    assert open_packed(packed) == opened and is_intact(opened)


def build_tar(path: Path, entries: list[tarfile.TarInfo | tuple[str, bytes]], *, manifest: dict | None = None) -> Path:
    """A tar of ``entries`` (name, data) or ready TarInfos (links), with ``manifest`` first when given."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        if manifest is not None:
            data = json.dumps(manifest).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
                continue
            info = tarfile.TarInfo(entry[0])
            info.size = len(entry[1])
            tar.addfile(info, io.BytesIO(entry[1]))
    return path


def repacked(packed: Path, out: Path, *, change=None, manifest_change=None) -> Path:
    """``packed`` rewritten with its members' (name, data) passed through ``change`` and its manifest through
    ``manifest_change``."""
    with tarfile.open(packed) as tar:
        manifest = json.loads(tar.extractfile(MANIFEST).read())
        entries = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers() if m.name != MANIFEST]
    if manifest_change:
        manifest_change(manifest)
    return build_tar(out, change(entries) if change else entries, manifest=manifest)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _bad_file(case: str, packed: Path, tmp_path: Path) -> Path:
    """A broken variant of ``packed`` for each bad-input case."""
    out = tmp_path / "bad.tar"
    model_entry = lambda entries: [e for e in entries if e[0] == artifacts.MODEL_FILE][0]  # noqa: E731
    if case == "corrupt":
        out.write_bytes(packed.read_bytes())
        data = read_member(packed, artifacts.MODEL_FILE)
        flip_byte(out, packed.read_bytes().index(data[:4096]) + 1000)
    elif case == "truncated":
        out.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    elif case == "truncated at a member":
        data = packed.read_bytes()
        out.write_bytes(data[: data.index(read_member(packed, artifacts.MODEL_FILE)[:4096]) - 512])
    elif case == "empty":
        out.write_bytes(b"")
    elif case == "random bytes":
        out.write_bytes(os.urandom(5000))
    elif case == "gzip":
        import gzip
        out.write_bytes(gzip.compress(packed.read_bytes()))
    elif case == "tar without manifest":
        build_tar(out, [("config.json", b"{}")])
    elif case == "manifest not json":
        build_tar(out, [(MANIFEST, b"not json")])
    elif case == "hash mismatch":
        repacked(packed, out, change=lambda es: [(n, d if n != artifacts.ANSWERS_JSON else d[:-2] + b"X]")
                                                 for n, d in es])
    elif case == "extra member":
        repacked(packed, out, change=lambda es: es + [("extra.txt", b"hello")])
    elif case == "member twice":
        repacked(packed, out, change=lambda es: es + [e for e in es if e[0] == artifacts.ANSWERS_JSON])
    elif case in ("dot-dot member", "absolute member", "folder member"):
        name = {"dot-dot member": "../evil", "absolute member": str(tmp_path / "evil"),
                "folder member": "sub/evil"}[case]
        repacked(packed, out, change=lambda es: [(name, b"x")] + es)
    elif case == "dot-dot in manifest":
        repacked(packed, out, change=lambda es: [("../evil", b"x")] + es,
                 manifest_change=lambda m: m["files"].insert(0, {"name": "../evil", "size": 1,
                                                                 "sha256": hashlib.sha256(b"x").hexdigest()}))
    elif case in ("symlink", "hardlink"):
        kind = tarfile.SYMTYPE if case == "symlink" else tarfile.LNKTYPE
        repacked(packed, out, change=lambda es: [link("evil", "/etc/passwd", kind)] + es)
    elif case == "far larger than declared":
        big = os.urandom(2_000_000)
        repacked(packed, out, change=lambda es: [(n, big if n == artifacts.MODEL_FILE else d) for n, d in es])
    elif case == "newer format":
        repacked(packed, out, manifest_change=lambda m: m.update(format=99))
    elif case == "manifest lacks model.keras":
        repacked(packed, out, change=lambda es: [e for e in es if e is not model_entry(es)],
                 manifest_change=lambda m: m.update(files=[f for f in m["files"] if f["name"] != artifacts.MODEL_FILE]))
    return out


BAD_FILES = {
    "corrupt": "manifest mismatch: the SHA-256 of model.keras differs",
    "truncated": "truncated",
    "truncated at a member": "truncated or incomplete packed model (model.keras is in the MANIFEST",
    "empty": "not a packed model",
    "random bytes": "not a packed model",
    "gzip": "not a packed model",
    "tar without manifest": "not a packed model (no MANIFEST first)",
    "manifest not json": "not a packed model (unreadable MANIFEST)",
    "hash mismatch": "manifest mismatch: the SHA-256 of answers.json differs",
    "extra member": "manifest mismatch: member 'extra.txt' is not in the MANIFEST",
    "member twice": "member 'answers.json' appears twice",
    "dot-dot member": "member path '../evil' leaves the extraction folder",
    "absolute member": "leaves the extraction folder",
    "folder member": "member 'sub/evil' is not a plain file name",
    "dot-dot in manifest": "member path '../evil' leaves the extraction folder",
    "symlink": "member 'evil' is a link",
    "hardlink": "member 'evil' is a link",
    "far larger than declared": "member 'model.keras' is 2000000 bytes, larger than the 300000 the MANIFEST declares",
    "newer format": "packed model format 99 is newer than this vqa-keras reads",
    "manifest lacks model.keras": "MANIFEST lacks model.keras",
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_packed_file_is_one_line_and_leaves_nothing(case, packed, tmp_path, cache):
    bad = _bad_file(case, packed, tmp_path)
    with pytest.raises(InputError, match=re.escape(BAD_FILES[case])) as raised:
        resolve_model(str(bad))
    assert "\n" not in str(raised.value) and str(bad) in str(raised.value)
    assert files_under(cache) == []
    assert not any((folder / "evil").exists() for folder in (tmp_path, cache, cache / "models"))


# --------------------------------------------------------------------------- by path or URL
def test_a_model_directory_or_a_missing_path_is_returned_as_is(model_dir, cache):
    assert resolve_model(str(model_dir)) == model_dir
    assert resolve_model(model_dir / "nope") == model_dir / "nope"  # its user says what is missing
    assert files_under(cache) == []


def test_the_cache_is_vqa_cache_dir_else_the_users_cache_folder(tmp_path):
    assert cache_dir({"VQA_CACHE_DIR": str(tmp_path)}) == tmp_path
    assert cache_dir({"XDG_CACHE_HOME": "/x/cache"}) == Path("/x/cache/vqa")
    assert cache_dir({}) == Path.home() / ".cache" / "vqa"


@pytest.mark.parametrize("url, message", [
    ("ftp://host/m.tar#sha256=" + "a" * 64, "unsupported URL scheme 'ftp'"),
    ("https://host/m.tar#sha256=abc", "the fragment must be '#sha256=' and 64 hex digits"),
    ("https://host/m.tar#md5=" + "a" * 32, "the fragment must be '#sha256='"),
])
def test_a_bad_url_is_refused(url, message):
    with pytest.raises(InputError, match=re.escape(message)):
        split_digest(url)


def test_split_digest():
    assert split_digest("https://h/m.tar#sha256=" + "AB" * 32) == ("https://h/m.tar", "ab" * 32)
    assert split_digest("file:///m.tar") == ("file:///m.tar", None)


class Server:
    """A local HTTP server of {path: bytes}; "/short/..." announces the whole length and sends half."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests = files, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                short = self.path.startswith("/short/")
                data = server.files.get(self.path.removeprefix("/short"))
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2] if short else data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(packed):
    served = Server({"/mlp.vqa.tar": packed.read_bytes(), "/junk.bin": b"not a model" * 100})
    yield served
    served.close()


def test_a_url_with_its_digest_is_downloaded_checked_and_then_reused(server, packed, cache):
    digest = sha256_file(packed)
    url = f"{server.url}/mlp.vqa.tar#sha256={digest}"
    opened = resolve_model(url)
    assert opened == cache / "models" / digest and is_intact(opened)
    assert modeldir.check_model_dir(opened) == opened / artifacts.MODEL_FILE
    assert resolve_model(url) == opened and server.requests == ["/mlp.vqa.tar"]  # reused, not downloaded again
    assert [path.name for path in (cache / "models").iterdir()] == [digest]  # the download itself is not kept


def test_a_file_url_and_a_local_packed_file_share_the_cache(packed, cache):
    digest = sha256_file(packed)
    opened = resolve_model(f"{packed.as_uri()}#sha256={digest}")
    assert opened == resolve_model(str(packed)) == cache / "models" / digest


@pytest.mark.parametrize("path, digest, message", [
    ("/mlp.vqa.tar", "0" * 64, "digest mismatch: the download's SHA-256 is"),
    ("/short/mlp.vqa.tar", None, "truncated download"),
    ("/missing.tar", "0" * 64, "HTTP 404"),
    ("/junk.bin", "junk", "not a packed model"),
    ("/mlp.vqa.tar", "none", "no '#sha256=<hex>' digest"),
])
def test_a_bad_download_is_one_line_and_leaves_nothing_in_the_cache(server, packed, cache, path, digest, message):
    digest = {None: sha256_file(packed), "junk": hashlib.sha256(b"not a model" * 100).hexdigest()}.get(digest, digest)
    url = f"{server.url}{path}" + ("" if digest == "none" else f"#sha256={digest}")
    with pytest.raises(InputError, match=re.escape(message)) as raised:
        resolve_model(url)
    assert "\n" not in str(raised.value)
    assert files_under(cache) == []


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_url_is_one_line(cache):
    with pytest.raises(InputError, match="unreachable"):
        fetch_model(f"http://127.0.0.1:{closed_port()}/m.tar#sha256={'0' * 64}")
    assert files_under(cache) == []


def test_a_url_without_a_digest_is_taken_only_when_insecure(server, packed, cache):
    url = f"{server.url}/mlp.vqa.tar"
    with pytest.raises(InputError, match="--insecure-no-digest"):
        resolve_model(url)
    assert resolve_model(url, insecure_no_digest=True) == cache / "models" / sha256_file(packed)


def test_the_serving_settings_take_a_url_and_resolve_a_packed_file(packed, cache):
    from vqa.serve_config import ServeSettings

    digest = sha256_file(packed)
    url = f"{packed.as_uri()}#sha256={digest}"
    settings = ServeSettings.from_environ({"VQA_MODEL_DIR": url})
    assert settings.model_dir == url  # a Path would fold the "//"
    assert ServeSettings.from_environ(settings.environment()) == settings
    assert ServeSettings(model_dir=packed).with_files_checked().model_dir == (cache / "models" / digest).resolve()
    no_digest = ServeSettings.from_environ({"VQA_MODEL_DIR": packed.as_uri()})
    with pytest.raises(InputError, match="--insecure-no-digest"):
        no_digest.with_files_checked()
    insecure = ServeSettings.from_environ({"VQA_MODEL_DIR": packed.as_uri(), "VQA_INSECURE_NO_DIGEST": "1"})
    assert insecure.with_files_checked().model_dir == (cache / "models" / digest).resolve()


def test_vqa_pack_prints_the_digest_to_put_in_a_url(model_dir, tmp_path, capsys):
    from vqa.cli import main

    out = tmp_path / "mlp.vqa.tar"
    assert main(["pack", "--model", str(model_dir), "--out", str(out), "--checkpoint", "best"]) == 0
    assert f"sha256 {sha256_file(out)}" in capsys.readouterr().out
    assert main(["pack", "--model", str(tmp_path / "nope"), "--out", str(out)]) == 1
    assert "vqa pack: error:" in capsys.readouterr().err


# --------------------------------------------------------------------------- with a real model (TensorFlow)
@pytest.mark.slow
def test_vqa_ask_answers_from_a_packed_model_as_from_its_directory(san_model_dir, synth_data, tmp_path, cache,
                                                                     capsys):
    from vqa.cli import main

    # The SAN on 64-pixel images: each `vqa ask` builds its VGG16, here the convolutions alone, not fc6-fc7
    packed = pack_model(san_model_dir, tmp_path / "san.vqa.tar")
    question = ["--image", str(synth_data.image), "--question", "What color is the object?", "--cnn-weights",
                "random"]
    assert main(["ask", "--model", str(san_model_dir), *question]) == 0
    from_directory = capsys.readouterr().out
    assert main(["ask", "--model", str(packed), *question]) == 0
    assert capsys.readouterr().out == from_directory
    assert main(["ask", "--model", f"{packed.as_uri()}#sha256={sha256_file(packed)}", *question]) == 0
    assert capsys.readouterr().out == from_directory


@pytest.mark.slow
@pytest.mark.parametrize("command", [["ask", "--image", "x.jpg", "--question", "q?"],
                                     ["export", "--out", "exported"],
                                     ["evaluate", "--data", "d", "--features", "f.h5", "--results", "r.json"]])
def test_every_model_flag_refuses_a_url_without_a_digest(command, tmp_path, cache, capsys, monkeypatch):
    from vqa.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.jpg").write_bytes(b"")
    assert main([*command, "--model", "http://127.0.0.1:9/m.tar"]) == 1
    assert "#sha256=<hex>' digest" in capsys.readouterr().err


def test_vqa_serve_refuses_a_bad_model_url_before_any_worker_starts(packed, cache, capsys):
    from vqa.cli import main

    assert main(["serve", "--model", packed.as_uri()]) == 1
    assert "#sha256=<hex>' digest" in capsys.readouterr().err
    assert main(["serve", "--model", f"{packed.as_uri()}#sha256={'0' * 64}"]) == 1
    assert "digest mismatch" in capsys.readouterr().err
    assert files_under(cache) == []
