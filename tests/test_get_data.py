"""data/get_data.sh, run offline: fake `wget`/`curl` first on PATH copy fixture zips.

The fakes understand exactly the flags the script uses (-c / -O for wget, -C - / -o
for curl), log every call as a JSON line and honour resuming by appending only
the bytes missing from the existing `.part` file, like a real HTTP range request.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import assert_shellcheck_clean

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="data/get_data.sh needs bash")

SCRIPT = Path(__file__).resolve().parents[1] / "data" / "get_data.sh"
VQA_URL = "https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa/"
KARPATHY_URL = "https://cs.stanford.edu/people/karpathy/deepimagesent/coco.zip"
IMAGES_URL = "http://images.cocodataset.org/zips/"

FAKE_DOWNLOADER = '''\
import json, os, sys
tool = os.path.basename(sys.argv[0])
value_flags = {"wget": {"-O"}, "curl": {"-C", "-o", "--retry", "--connect-timeout"}}[tool]
bare_flags = {"wget": {"-c"}, "curl": {"-f", "-L", "-fL"}}[tool]
options, urls, args = {}, [], iter(sys.argv[1:])
for arg in args:
    if arg in value_flags:
        options[arg] = next(args)
    elif arg in bare_flags or arg.startswith(("--tries=", "--timeout=")):
        options[arg] = True
    elif arg.startswith("-"):
        sys.exit(f"fake {tool}: unsupported option {arg}")
    else:
        urls.append(arg)
out = options["-O" if tool == "wget" else "-o"]
resume = options.get("-c") is True if tool == "wget" else options.get("-C") == "-"
url, = urls
name = url.rsplit("/", 1)[-1]
fixture = os.path.join(os.environ["FAKE_DL_FIXTURES"], name)
have = os.path.getsize(out) if resume and os.path.exists(out) else 0
with open(os.environ["FAKE_DL_LOG"], "a") as log:
    log.write(json.dumps({"tool": tool, "argv": sys.argv[1:], "url": url, "resume": resume,
                          "resumed_from": have}) + "\\n")
if os.environ.get("FAKE_DL_FAIL"):
    print(f"{tool}: unable to resolve host address", file=sys.stderr)
    sys.exit(int(os.environ["FAKE_DL_FAIL"]))
if not os.path.exists(fixture):
    print(f"{tool}: ERROR 404: Not Found.", file=sys.stderr)
    sys.exit(8 if tool == "wget" else 22)
data = open(fixture, "rb").read()
partial = os.environ.get("FAKE_DL_PARTIAL") == name
with open(out, "ab" if have else "wb") as handle:
    handle.write(data[have:len(data) // 2] if partial else data[have:])
sys.exit(4 if partial else 0)
'''


def v2_archives(prefix: str = "v2_") -> dict[str, dict[str, bytes]]:
    """Archive name -> {member path: bytes}, mirroring the official zips' contents."""
    def questions(split: str) -> bytes:
        return json.dumps({"data_subtype": split, "questions": [
            {"image_id": 9, "question": "What is this?", "question_id": 90}]}).encode()

    def annotations(split: str) -> bytes:
        return json.dumps({"data_subtype": split, "annotations": []}).encode()

    return {
        f"{prefix}Questions_Train_mscoco.zip": {
            f"{prefix}OpenEnded_mscoco_train2014_questions.json": questions("train2014")},
        f"{prefix}Questions_Val_mscoco.zip": {
            f"{prefix}OpenEnded_mscoco_val2014_questions.json": questions("val2014")},
        f"{prefix}Questions_Test_mscoco.zip": {
            f"{prefix}OpenEnded_mscoco_test-dev2015_questions.json": questions("test-dev2015"),
            f"{prefix}OpenEnded_mscoco_test2015_questions.json": questions("test2015")},
        f"{prefix}Annotations_Train_mscoco.zip": {
            f"{prefix}mscoco_train2014_annotations.json": annotations("train2014")},
        f"{prefix}Annotations_Val_mscoco.zip": {
            f"{prefix}mscoco_val2014_annotations.json": annotations("val2014")},
    }


FEATURE_ARCHIVES = {"coco.zip": {"coco/dataset.json": b'{"images": []}', "coco/vgg_feats.mat": os.urandom(3000)}}
IMAGE_ARCHIVES = {f"{split}.zip": {f"{split}/COCO_{split}_000000000009.jpg": os.urandom(2000)}
                  for split in ("train2014", "val2014", "test2015")}
ALL_ARCHIVES = {**v2_archives(), **v2_archives(prefix=""), **FEATURE_ARCHIVES, **IMAGE_ARCHIVES}
DEFAULT_ARCHIVES = {**v2_archives(), **FEATURE_ARCHIVES}


class Harness:
    """Fixture zips, fake downloaders on PATH, and a way to run the script against them."""

    def __init__(self, root: Path):
        self.fixtures, self.bin, self.dest = root / "fixtures", root / "bin", root / "dest"
        self.log = root / "downloads.log"
        for folder in (self.fixtures, self.bin):
            folder.mkdir()
        for name, members in ALL_ARCHIVES.items():
            self.write_zip(name, members)
        for tool in ("wget", "curl"):
            (self.bin / tool).write_text(f"#!{sys.executable}\n{FAKE_DOWNLOADER}")
            (self.bin / tool).chmod(0o755)

    def write_zip(self, name: str, members: dict[str, bytes]) -> None:
        with zipfile.ZipFile(self.fixtures / name, "w", zipfile.ZIP_DEFLATED) as archive:
            for member, data in members.items():
                archive.writestr(member, data)

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        environ = {key: value for key, value in os.environ.items() if not key.endswith("_BASE_URL")}
        environ.update(PATH=f"{self.bin}{os.pathsep}{os.environ['PATH']}", FAKE_DL_LOG=str(self.log),
                       FAKE_DL_FIXTURES=str(self.fixtures), **env)
        return subprocess.run(["bash", str(SCRIPT), "--dest", str(self.dest), *args], env=environ,
                              capture_output=True, text=True, timeout=60)

    def calls(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def downloaded(self) -> set[str]:
        return {call["url"].rsplit("/", 1)[-1] for call in self.calls()}


@pytest.fixture
def harness(tmp_path) -> Harness:
    return Harness(tmp_path)


def assert_extracted(dest: Path, archives: dict[str, dict[str, bytes]]) -> None:
    for members in archives.values():
        for member, data in members.items():
            assert (dest / member).read_bytes() == data, member


def test_full_run_extracts_official_names_and_cleans_up(harness):
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert_extracted(harness.dest, DEFAULT_ARCHIVES)
    assert {call["url"] for call in harness.calls()} == (
        {VQA_URL + name for name in v2_archives()} | {KARPATHY_URL})
    assert {call["tool"] for call in harness.calls()} == {"wget"}
    leftovers = [path.name for path in harness.dest.iterdir() if path.suffix in {".zip", ".part"}
                 or path.name.startswith(".extract-")]
    assert leftovers == []
    assert "failed:        none\n" in result.stderr


def test_second_run_downloads_nothing(harness):
    assert harness.run().returncode == 0
    first_calls = len(harness.calls())
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert len(harness.calls()) == first_calls
    assert result.stderr.count("already extracted, skipping") == len(DEFAULT_ARCHIVES)


def test_missing_output_is_fetched_again(harness):
    assert harness.run().returncode == 0
    (harness.dest / "coco" / "vgg_feats.mat").unlink()
    harness.log.unlink()
    assert harness.run().returncode == 0
    assert harness.downloaded() == {"coco.zip"}
    assert_extracted(harness.dest, FEATURE_ARCHIVES)


def test_corrupt_zip_is_reported_deleted_and_refetched(harness):
    good = (harness.fixtures / "v2_Annotations_Val_mscoco.zip").read_bytes()
    corrupt = bytearray(good)
    corrupt[40:60] = bytes(20)  # inside the member's compressed data: fails the CRC or inflate
    (harness.fixtures / "v2_Annotations_Val_mscoco.zip").write_bytes(bytes(corrupt))
    result = harness.run()
    assert result.returncode == 1
    assert "v2_Annotations_Val_mscoco.zip is corrupt" in result.stderr
    assert "failed:        v2_Annotations_Val_mscoco.zip\n" in result.stderr
    assert not (harness.dest / "v2_Annotations_Val_mscoco.zip").exists()
    assert not (harness.dest / "v2_mscoco_val2014_annotations.json").exists()
    assert (harness.dest / "v2_mscoco_train2014_annotations.json").exists()

    (harness.fixtures / "v2_Annotations_Val_mscoco.zip").write_bytes(good)
    harness.log.unlink()
    assert harness.run().returncode == 0
    assert harness.downloaded() == {"v2_Annotations_Val_mscoco.zip"}
    assert_extracted(harness.dest, DEFAULT_ARCHIVES)


def test_wrong_archive_from_mirror_is_rejected(harness):
    harness.write_zip("coco.zip", {"coco/dataset.json": b"{}"})  # no vgg_feats.mat
    result = harness.run()
    assert result.returncode == 1
    assert "coco.zip: the archive has no coco/vgg_feats.mat" in result.stderr
    assert "Check KARPATHY_BASE_URL" in result.stderr
    assert not (harness.dest / "coco").exists() and not (harness.dest / "coco.zip").exists()


def test_extraction_error_keeps_the_archive_for_the_next_run(harness):
    harness.dest.mkdir()
    (harness.dest / "coco").write_text("a file where the coco/ folder goes")
    result = harness.run()
    assert result.returncode == 1
    assert "FAILED to extract coco.zip; kept the archive" in result.stderr
    assert (harness.dest / "coco.zip").is_file()

    (harness.dest / "coco").unlink()
    harness.log.unlink()
    result = harness.run()
    assert result.returncode == 0, result.stderr
    assert "coco.zip: found a complete download" in result.stderr
    assert harness.calls() == []
    assert_extracted(harness.dest, DEFAULT_ARCHIVES)


@pytest.mark.parametrize("downloader", ["wget", "curl"])
def test_offline_download_fails_naming_the_url(harness, downloader):
    result = harness.run("--downloader", downloader, FAKE_DL_FAIL="4" if downloader == "wget" else "6")
    assert result.returncode == 1
    assert f"FAILED to download {VQA_URL}v2_Questions_Train_mscoco.zip (network failure" in result.stderr
    assert "set VQA_BASE_URL to a mirror" in result.stderr
    assert "some archives failed" in result.stderr
    assert list(harness.dest.iterdir()) == []  # no empty .part files, nothing extracted


def test_missing_file_on_server_is_reported(harness):
    (harness.fixtures / "coco.zip").unlink()
    result = harness.run()
    assert result.returncode == 1
    assert f"FAILED to download {KARPATHY_URL} (the server answered with an error" in result.stderr
    assert_extracted(harness.dest, v2_archives())


@pytest.mark.parametrize(("downloader", "resume_flag"), [("wget", "-c"), ("curl", "-C -")])
def test_interrupted_download_is_resumed(harness, downloader, resume_flag):
    name = "coco.zip"
    result = harness.run("--downloader", downloader, FAKE_DL_PARTIAL=name)
    assert result.returncode == 1
    part = harness.dest / f"{name}.part"
    half = (harness.fixtures / name).stat().st_size // 2
    assert part.stat().st_size == half

    result = harness.run("--downloader", downloader)
    assert result.returncode == 0, result.stderr
    assert f"resuming {KARPATHY_URL} ({half} bytes already here)" in result.stderr
    last = harness.calls()[-1]
    assert (last["tool"], last["resume"], last["resumed_from"]) == (downloader, True, half)
    assert resume_flag in " ".join(last["argv"])
    assert_extracted(harness.dest, DEFAULT_ARCHIVES)
    assert not part.exists()


def test_version_v1_picks_v1_names_and_mirror(harness):
    result = harness.run("--version", "v1", "--no-features", VQA_BASE_URL="https://mirror.example/vqa/")
    assert result.returncode == 0, result.stderr
    assert {call["url"] for call in harness.calls()} == {
        f"https://mirror.example/vqa/{name}" for name in v2_archives(prefix="")}
    assert_extracted(harness.dest, v2_archives(prefix=""))
    assert not list(harness.dest.glob("v2_*"))
    assert (harness.dest / "OpenEnded_mscoco_test-dev2015_questions.json").exists()


def test_images_are_opt_in(harness):
    assert harness.run().returncode == 0
    assert not any(name in harness.downloaded() for name in IMAGE_ARCHIVES)
    result = harness.run("--images", "--keep-archives")
    assert result.returncode == 0, result.stderr
    assert harness.downloaded() - set(DEFAULT_ARCHIVES) == set(IMAGE_ARCHIVES)
    assert {call["url"] for call in harness.calls()} >= {IMAGES_URL + name for name in IMAGE_ARCHIVES}
    assert_extracted(harness.dest, IMAGE_ARCHIVES)
    assert (harness.dest / "train2014.zip").exists()  # --keep-archives


def test_dry_run_prints_urls_and_touches_nothing(harness):
    result = harness.run("--dry-run", "--images", "--no-features")
    assert result.returncode == 0
    expected = [VQA_URL + name for name in v2_archives()] + [IMAGES_URL + name for name in IMAGE_ARCHIVES]
    assert result.stdout.split() == expected
    assert harness.calls() == [] and not harness.dest.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--version", "v3"], "--version must be v1 or v2, not 'v3'"),
    (["--downloader", "aria2c"], "--downloader must be wget or curl"),
    (["--frobnicate"], "unknown option '--frobnicate'"),
    (["--dest"], "--dest needs a folder"),
])
def test_bad_usage_exits_2_with_a_message(harness, args, message):
    result = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
    assert harness.calls() == []


def test_help_is_executable_and_lists_the_options():
    assert os.access(SCRIPT, os.X_OK), "data/get_data.sh must be executable (chmod +x)"
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for option in ("--dest", "--version", "--images", "--no-features", "--dry-run", "VQA_BASE_URL"):
        assert option in result.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs a real curl for file:// mirrors")
def test_real_curl_with_a_local_file_mirror(tmp_path):
    mirror, dest = tmp_path / "mirror", tmp_path / "dest"
    harness = Harness(tmp_path)  # only for its fixture zips; the real curl runs
    shutil.copytree(harness.fixtures, mirror)
    (dest).mkdir()
    (dest / "coco.zip.part").write_bytes((mirror / "coco.zip").read_bytes()[:1000])
    env = dict(os.environ, VQA_BASE_URL=mirror.as_uri(), KARPATHY_BASE_URL=mirror.as_uri())
    result = subprocess.run(["bash", str(SCRIPT), "--dest", str(dest), "--downloader", "curl"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert_extracted(dest, DEFAULT_ARCHIVES)


def test_script_is_shellcheck_clean():
    assert_shellcheck_clean(SCRIPT)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_outputs_match_the_names_prepare_reads(harness, version):
    from vqa import artifacts

    prefix = version.upper()
    questions = getattr(artifacts, f"{prefix}_QUESTIONS_JSON")
    annotations = getattr(artifacts, f"{prefix}_ANNOTATIONS_JSON")
    result = harness.run("--version", version)
    assert result.returncode == 0, result.stderr
    expected = [questions.format(split=split) for split in artifacts.SPLITS]
    expected += [annotations.format(split=split) for split in artifacts.ANNOTATED_SPLITS]
    expected += [f"{artifacts.KARPATHY_DIR}/{name}"
                 for name in (artifacts.KARPATHY_DATASET_JSON, artifacts.KARPATHY_FEATS_MAT)]
    assert all((harness.dest / name).is_file() for name in expected), sorted(os.listdir(harness.dest))
