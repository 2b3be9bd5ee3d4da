"""Tests for live model versions: vqa.repository (scanning, choosing), serving/versions.py (leases, the
watcher) without TensorFlow, and one create_app over a real repository of tiny models (slow)."""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from serving.versions import LiveModel, VersionWatcher
from vqa import artifacts, modeldir
from vqa.batching import Batcher
from vqa.errors import InputError, VQAError
from vqa.repository import check_model_or_repository, fingerprint, is_repository, pick, scan, version_number
from vqa.serve_config import ServeSettings


def write_version(folder: Path, *, status: str = "finished", files=(artifacts.MODEL_FILE,)) -> Path:
    """A model directory that passes check_model_dir (stand-in files: nothing here loads Keras)."""
    folder.mkdir(parents=True, exist_ok=True)
    config = modeldir.make_config(model="mlp", status=status, train={"epochs": 1}, max_question_length=30,
                                  spacy_model=None, num_answers=3, vocabulary_size=9, image_layout="vector",
                                  image_size=224, image_feature_shape=[64], cnn_weights="random", keras_version="3")
    modeldir.write_config(folder, config)
    for name in (artifacts.VOCABULARY_JSON, artifacts.ANSWERS_JSON):
        (folder / name).write_text("[]")
    for name in files:
        (folder / name).write_bytes(b"weights")
    return folder


# --------------------------------------------------------------------------- scanning
@pytest.mark.parametrize("name, is_dir, number", [
    ("1", True, 1), ("12", True, 12), ("2", False, 2), ("2.vqa", False, 2), ("7.vqa.tar", False, 7),
    ("0", True, None), ("01", True, None), ("-1", True, None), ("2.vqa", True, None), ("3.old", True, None),
    (".3.tmp", False, None), ("README", False, None), ("v2", True, None),
])
def test_a_version_is_a_positive_integer_folder_or_packed_file(name, is_dir, number):
    assert version_number(name, is_dir=is_dir) == number


def test_scan_lists_versions_highest_first_with_what_is_incomplete(tmp_path):
    write_version(tmp_path / "1")
    write_version(tmp_path / "3", files=())  # no model.keras yet: being copied
    write_version(tmp_path / "4", status="running")
    (tmp_path / "5.vqa").write_bytes(b"packed")
    (tmp_path / "6").write_bytes(b"")
    write_version(tmp_path / "9.old")  # not a version name
    (tmp_path / "notes.txt").write_text("ignored")
    versions = {v.number: v for v in scan(tmp_path)}
    assert [v.number for v in scan(tmp_path)] == [6, 5, 4, 3, 1]
    assert versions[1].problem is None and versions[5].problem is None and versions[5].path.name == "5.vqa"
    assert "missing model.keras" in versions[3].problem
    assert "has not finished" in versions[4].problem
    assert "empty file" in versions[6].problem


def test_two_entries_for_one_version_are_both_refused(tmp_path):
    write_version(tmp_path / "2")
    (tmp_path / "2.vqa").write_bytes(b"packed")
    versions = scan(tmp_path)
    assert len(versions) == 2 and all("appears twice (2, 2.vqa)" in v.problem for v in versions)
    assert pick(versions, current=None) is None


def test_fingerprint_changes_while_a_version_is_written(tmp_path):
    folder = write_version(tmp_path / "1")
    before = fingerprint(folder)
    assert fingerprint(folder) == before
    with open(folder / artifacts.MODEL_FILE, "ab") as f:
        f.write(b"more")
    assert fingerprint(folder) != before
    (folder / "extra").write_text("x")
    assert len(fingerprint(folder)) == len(before) + 1


# --------------------------------------------------------------------------- choosing
def found(tmp_path, *numbers: int):
    for number in numbers:
        write_version(tmp_path / str(number))
    return scan(tmp_path)


def test_pick_takes_the_highest_complete_version_at_start(tmp_path):
    write_version(tmp_path / "3", files=())
    assert pick(found(tmp_path, 1, 2), current=None).number == 2


def test_pick_waits_until_a_new_version_is_unchanged_for_one_poll(tmp_path):
    first = found(tmp_path, 1)
    previous = {v.number: v.fingerprint for v in first}
    second = found(tmp_path, 2)
    assert pick(second, current=1, previous=previous) is None  # new since the last poll: wait
    previous = {v.number: v.fingerprint for v in second}
    assert pick(scan(tmp_path), current=1, previous=previous).number == 2


def test_pick_skips_a_refused_version_until_it_changes(tmp_path):
    versions = found(tmp_path, 1, 2)
    stable = {v.number: v.fingerprint for v in versions}
    refused = {2: stable[2]}
    assert pick(versions, current=1, previous=stable, refused=refused) is None
    assert pick(versions, current=None, refused=refused).number == 1  # at start: the next lower one
    (tmp_path / "2" / artifacts.MODEL_FILE).write_bytes(b"fixed weights")
    changed = scan(tmp_path)
    assert pick(changed, current=1, previous={v.number: v.fingerprint for v in changed}, refused=refused).number == 2


def test_pick_rolls_back_only_once_the_served_version_is_gone(tmp_path):
    versions = found(tmp_path, 1, 2, 3)
    stable = {v.number: v.fingerprint for v in versions}
    (tmp_path / "3" / artifacts.MODEL_FILE).unlink()  # rm -r under way: 3 is incomplete but still there
    assert pick(scan(tmp_path), current=3, previous=stable) is None
    shutil.rmtree(tmp_path / "3")
    assert pick(scan(tmp_path), current=3, previous=stable).number == 2
    assert pick(scan(tmp_path), current=2, previous=stable) is None


# --------------------------------------------------------------------------- start-up checks
def test_a_repository_is_a_folder_of_versions_without_config_json(tmp_path):
    assert not is_repository(tmp_path)
    write_version(tmp_path / "1")
    assert is_repository(tmp_path) and not is_repository(tmp_path / "1")
    assert check_model_or_repository(tmp_path).number == 1
    assert check_model_or_repository(tmp_path / "1") is None


def test_a_folder_without_any_version_is_one_line_naming_both_layouts(tmp_path):
    with pytest.raises(InputError, match="not a finished model directory.*nor is it a model repository") as error:
        check_model_or_repository(tmp_path)
    assert "\n" not in str(error.value)


def test_a_repository_without_a_complete_version_is_one_line(tmp_path):
    write_version(tmp_path / "1", files=())
    with pytest.raises(InputError, match=r"no complete model version \(1 found; version 1: .*missing model.keras"):
        check_model_or_repository(tmp_path)


def test_vqa_serve_settings_accept_a_repository_and_check_poll_seconds(tmp_path):
    write_version(tmp_path / "repo" / "2")
    settings = ServeSettings(model_dir=tmp_path / "repo", cnn_weights="random").with_files_checked()
    assert settings.model_dir == (tmp_path / "repo").resolve() and settings.poll_seconds == 2.0
    assert ServeSettings.from_environ({"VQA_POLL_SECONDS": "0.5"}).poll_seconds == 0.5
    for value in ("0", "-1", "soon"):
        with pytest.raises(InputError, match="VQA_POLL_SECONDS must be a positive number of seconds"):
            ServeSettings.from_environ({"VQA_POLL_SECONDS": value})
    assert "`--poll-seconds` | `VQA_POLL_SECONDS` | 2.0 |" in ServeSettings.markdown_table()


# --------------------------------------------------------------------------- leases and the watcher, no TensorFlow
class FakePredictor:
    """What LiveModel and VersionWatcher use of a Predictor: ``images`` and ``close``."""

    def __init__(self, name: str, images=None):
        self.name, self.images, self.closed = name, images or object(), None

    def close(self, *, keep_images=False):
        self.closed = {"keep_images": keep_images}


def test_a_replaced_predictor_closes_when_its_last_request_ends():
    live = LiveModel()
    old = FakePredictor("a")
    live.serve(old, "1")
    lease = live.acquire()
    live.serve(FakePredictor("b", images=old.images), "2")
    assert live.version == "2" and old.closed is None  # a request still runs on it
    assert lease.predictor is old and lease.version == "1"
    live.release(lease)
    assert old.closed == {"keep_images": True}  # the new one shares its images part
    newer = FakePredictor("c")
    live.serve(newer, "3")  # nobody holds "b": closed at once, with its images (not shared)
    assert live.predictor is newer


def test_batcher_close_ends_its_thread_and_a_late_submit_still_runs():
    batcher = Batcher(lambda items: [item * 2 for item in items], max_batch_size=4, timeout_s=0.0)
    assert batcher.submit(2)[0] == 4
    thread = batcher._thread
    batcher.close()
    thread.join(5)
    assert not thread.is_alive()
    assert batcher.submit(3)[0] == 6  # a straggler: a new thread answers it
    batcher.close()


class Harness:
    """A VersionWatcher over ``repo`` whose loads are fakes; versions named in ``broken`` fail to load."""

    def __init__(self, repo: Path):
        self.live, self.broken, self.loaded = LiveModel(), set(), []
        self.watcher = VersionWatcher(repo, self.live, load=self.load, serve=self.live.serve, checkpoint="last",
                                      poll_seconds=60)

    def load(self, version):
        self.loaded.append(version.number)
        if version.number in self.broken:
            raise VQAError(f"{version.path}/model.keras: cannot load\n(bad zip)")
        return FakePredictor(version.name)


def test_watcher_serves_the_highest_version_and_takes_a_new_one_after_one_stable_poll(tmp_path):
    write_version(tmp_path / "1")
    harness = Harness(tmp_path)
    harness.watcher.serve_first()
    assert harness.live.version == "1"
    write_version(tmp_path / "2")
    harness.watcher.poll()
    assert harness.live.version == "1"  # seen once: could still be copying
    harness.watcher.poll()
    assert harness.live.version == "2" and harness.loaded == [1, 2]


def test_watcher_refuses_a_broken_version_once_and_retries_it_when_it_changes(tmp_path, caplog):
    write_version(tmp_path / "1")
    harness = Harness(tmp_path)
    harness.watcher.serve_first()
    harness.broken.add(3)
    write_version(tmp_path / "3")
    for _ in range(4):
        harness.watcher.poll()
    assert harness.live.version == "1" and harness.loaded == [1, 3]  # tried once, not every poll
    assert harness.live.refused == {"3": f"{tmp_path / '3'}/model.keras: cannot load (bad zip)"}
    assert "model version 3" in caplog.text and "refused" in caplog.text and "version 1 keeps serving" in caplog.text
    harness.broken.clear()
    (tmp_path / "3" / artifacts.MODEL_FILE).write_bytes(b"fixed")
    harness.watcher.poll()
    harness.watcher.poll()
    assert harness.live.version == "3" and harness.live.refused == {}


def test_watcher_rolls_back_when_the_served_version_is_removed(tmp_path):
    write_version(tmp_path / "1")
    write_version(tmp_path / "2")
    harness = Harness(tmp_path)
    harness.watcher.serve_first()
    assert harness.live.version == "2"
    shutil.rmtree(tmp_path / "2")
    harness.watcher.poll()
    assert harness.live.version == "1"
    shutil.rmtree(tmp_path / "1")
    harness.watcher.poll()  # nothing left: the served model stays (a warning is logged)
    assert harness.live.version == "1"


def test_watcher_start_up_falls_back_below_a_broken_version_and_fails_when_none_loads(tmp_path):
    write_version(tmp_path / "1")
    write_version(tmp_path / "2")
    harness = Harness(tmp_path)
    harness.broken.add(2)
    harness.watcher.serve_first()
    assert harness.live.version == "1" and set(harness.live.refused) == {"2"}
    nothing = Harness(tmp_path)
    nothing.broken |= {1, 2}
    with pytest.raises(VQAError, match="no model version could be served .*2: .*cannot load"):
        nothing.watcher.serve_first()


@pytest.mark.slow
def test_a_predictor_shares_an_images_part_only_when_it_fits(predictor, mlp_model_dir, san_model_dir, jpeg_bytes):
    from vqa.predict import Predictor

    same = Predictor(mlp_model_dir, cnn_weights="random", images=predictor.images)
    assert same.images is predictor.images
    assert same.ask(jpeg_bytes, "what color?", top=3) == predictor.ask(jpeg_bytes, "what color?", top=3)
    grid = Predictor(san_model_dir, cnn_weights="random", images=predictor.images)  # a grid layout: its own VGG16
    assert grid.images is not predictor.images and grid.images.layout == "grid"
    other_weights = Predictor(mlp_model_dir, cnn_weights=None, images=predictor.images)
    assert other_weights.images is not predictor.images and other_weights.images.cnn_weights is None
    same.close(keep_images=True)
    assert predictor.ask(jpeg_bytes, "what color?", top=1)  # the shared part still answers


@pytest.fixture()
def jpeg_bytes(synth_data) -> bytes:
    return synth_data.image.read_bytes()


# --------------------------------------------------------------------------- the app over a real repository
def put_in_place(source: Path, repo: Path, name: str) -> None:
    """Copy beside the repository, then rename into it: the version appears whole (docs/serving.md)."""
    staging = repo.parent / f".staging-{name}"
    shutil.copytree(source, staging)
    os.replace(staging, repo / name)


def wait_for(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_app_swaps_versions_live_without_failing_a_request(san_model_dir, synth_data, tmp_path):
    import serving.app
    from serving.app import create_app

    repo = tmp_path / "repo"  # the SAN on 64-pixel images: the app builds VGG16's convolutions alone
    repo.mkdir()
    put_in_place(san_model_dir, repo, "1")
    app = create_app({"TESTING": True, "VQA_MODEL_DIR": str(repo), "VQA_CNN_WEIGHTS": "random",
                      "VQA_POLL_SECONDS": "0.1"})
    client = app.test_client()
    image = synth_data.image.read_bytes()

    def ask():
        return client.post("/predict", data={"image": (io.BytesIO(image), "i.jpg"), "question": "what color?"})

    def version():
        return client.get("/healthz").headers["X-Model-Version"]

    try:
        assert ask().headers["X-Model-Version"] == "1" and client.get("/nowhere").headers["X-Model-Version"] == "1"
        first = app.extensions[serving.app.LIVE_KEY].predictor
        statuses, stop = [], threading.Event()

        def load():
            while not stop.is_set():
                response = ask()
                statuses.append((response.status_code, response.headers["X-Model-Version"]))

        worker = threading.Thread(target=load)
        worker.start()
        put_in_place(san_model_dir, repo, "2")
        wait_for(lambda: version() == "2")
        time.sleep(0.3)
        stop.set()
        worker.join(60)
        assert {status for status, _ in statuses} == {200} and {"1", "2"} >= {v for _, v in statuses}
        second = app.extensions[serving.app.LIVE_KEY].predictor
        assert second is not first and second.images is first.images  # same VGG16 and feature cache
        assert client.get("/readyz").get_json() == {"status": "ready", "model_version": "2"}
        assert client.get("/healthz").get_json()["model_version"] == "2"
        assert "version 2" in client.get("/").get_data(as_text=True)
        assert "vqa_model_version 2.0" in client.get("/metrics").get_data(as_text=True)

        broken = repo.parent / "broken"
        shutil.copytree(san_model_dir, broken)
        (broken / artifacts.MODEL_FILE).write_bytes(b"not a keras file")
        os.replace(broken, repo / "3")
        wait_for(lambda: "refused" in client.get("/readyz").get_json())
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.get_json()["model_version"] == "2"
        assert "cannot load" in ready.get_json()["refused"]["3"]
        assert ask().headers["X-Model-Version"] == "2"

        shutil.rmtree(repo / "3")
        shutil.rmtree(repo / "2")
        wait_for(lambda: version() == "1")
        assert ask().status_code == 200 and client.get("/readyz").get_json() == {"status": "ready",
                                                                                 "model_version": "1"}
    finally:
        app.extensions[serving.app.WATCHER_KEY].stop()


@pytest.mark.parametrize("layout, message", [
    ({}, "nor is it a model repository"),
    ({"1": "incomplete"}, "no complete model version (1 found; version 1:"),
])
def test_vqa_serve_refuses_a_repository_without_a_complete_version_in_one_line(layout, message, tmp_path,
                                                                               monkeypatch, capsys):
    from vqa.cli import main

    calls = []
    monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
    for name in layout:
        write_version(tmp_path / "repo" / name, files=())
    (tmp_path / "repo").mkdir(exist_ok=True)
    assert main(["serve", "--model", str(tmp_path / "repo"), "--cnn-weights", "random"]) != 0 and calls == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_create_app_refuses_a_repository_without_a_complete_version_in_one_line(tmp_path):
    from serving.app import create_app

    write_version(tmp_path / "2", files=())
    with pytest.raises(InputError) as error:
        create_app({"TESTING": True, "VQA_MODEL_DIR": str(tmp_path), "VQA_CNN_WEIGHTS": "random"})
    assert "no complete model version (1 found; version 2:" in str(error.value) and "\n" not in str(error.value)


def test_vqa_serve_hands_the_repository_and_poll_interval_to_the_workers(tmp_path, monkeypatch):
    from vqa.cli import main

    calls = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: calls.append(env))
    write_version(tmp_path / "repo" / "3")
    monkeypatch.chdir(tmp_path)
    main(["serve", "--model", "repo", "--cnn-weights", "random", "--poll-seconds", "0.5"])
    env, = calls
    assert env["VQA_MODEL_DIR"] == str((tmp_path / "repo").resolve()) and env["VQA_POLL_SECONDS"] == "0.5"
