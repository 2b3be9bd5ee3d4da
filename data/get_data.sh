#!/usr/bin/env bash
# Download the VQA questions and annotations, Karpathy's COCO VGG16 features
# and (opt-in) the COCO images, and unzip them into data/.
#
# Resumable (wget -c / curl -C - into NAME.zip.part, renamed when complete),
# idempotent (an archive whose extracted files are all there is skipped), and
# careful: each archive is CRC-checked while it is extracted into a temporary
# folder, with Python's zipfile (no unzip needed), and only moved into place
# when complete; a corrupt archive is deleted so the next run fetches it again.
# Run with --help for the options.
set -euo pipefail

PROG="${0##*/}"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly PROG SCRIPT_DIR

# Mirrors: point these at another server (or, with --downloader curl, at a
# file:///local/folder) holding the same archive names.
VQA_BASE_URL="${VQA_BASE_URL:-https://s3.amazonaws.com/cvmlp/vqa/mscoco/vqa}"
COCO_IMAGES_BASE_URL="${COCO_IMAGES_BASE_URL:-http://images.cocodataset.org/zips}"
KARPATHY_BASE_URL="${KARPATHY_BASE_URL:-https://cs.stanford.edu/people/karpathy/deepimagesent}"

# Options (set by parse_args).
DEST="$SCRIPT_DIR"
VERSION="v2"
WITH_IMAGES=0
WITH_FEATURES=1
DRY_RUN=0
KEEP_ARCHIVES=0
DOWNLOADER=""
PYTHON_BIN=""

usage() {
  cat <<EOF
Usage: $PROG [--dest DIR] [--version v1|v2] [--images] [--no-features]
            [--keep-archives] [--downloader wget|curl] [--dry-run]

Download and unzip the VQA data into DIR (default: the folder of this script).

  --dest DIR             where the files land (created if missing)
  --version v1|v2        VQA questions + annotations to fetch (default: v2);
                         train2014, val2014, test-dev2015 and test2015 questions,
                         train2014 and val2014 annotations (about 45 MB zipped)
  --images               also fetch the COCO images train2014/, val2014/,
                         test2015/ (about 13 + 6 + 12 GB zipped; opt-in)
  --no-features          skip Karpathy's coco.zip (coco/dataset.json +
                         coco/vgg_feats.mat, about 750 MB zipped)
  --keep-archives        keep the .zip files after extraction (default: delete)
  --downloader TOOL      wget or curl (default: wget if installed, else curl)
  --dry-run              print the URLs that would be downloaded, one a line
  -h, --help             show this help

Environment: VQA_BASE_URL, COCO_IMAGES_BASE_URL, KARPATHY_BASE_URL override the
download servers (mirrors); PYTHON picks the interpreter used to unzip.
Interrupted downloads resume on the next run; finished archives are skipped.
Exit status: 0 when everything is there, 1 when an archive failed, 2 on bad usage.
EOF
}

log() { printf '%s\n' "$*" >&2; }
die() { log "$PROG: $*"; exit 1; }
usage_error() { log "$PROG: $*; see '$PROG --help'"; exit 2; }

parse_args() {
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --dest) (($# >= 2)) || usage_error "--dest needs a folder"; DEST="$2"; shift ;;
      --dest=*) DEST="${1#*=}" ;;
      --version) (($# >= 2)) || usage_error "--version needs v1 or v2"; VERSION="$2"; shift ;;
      --version=*) VERSION="${1#*=}" ;;
      --downloader) (($# >= 2)) || usage_error "--downloader needs wget or curl"; DOWNLOADER="$2"; shift ;;
      --downloader=*) DOWNLOADER="${1#*=}" ;;
      --images) WITH_IMAGES=1 ;;
      --no-features) WITH_FEATURES=0 ;;
      --keep-archives) KEEP_ARCHIVES=1 ;;
      --dry-run) DRY_RUN=1 ;;
      *) usage_error "unknown option '$1'" ;;
    esac
    shift
  done
  case "$VERSION" in v1 | v2) ;; *) usage_error "--version must be v1 or v2, not '$VERSION'" ;; esac
  case "$DOWNLOADER" in "" | wget | curl) ;; *) usage_error "--downloader must be wget or curl, not '$DOWNLOADER'" ;; esac
  [[ -n "$DEST" ]] || usage_error "--dest needs a folder"
}

# Find the downloader and the Python that unzips; only a real run needs them.
find_tools() {
  if [[ -z "$DOWNLOADER" ]]; then
    if command -v wget >/dev/null 2>&1; then DOWNLOADER=wget
    elif command -v curl >/dev/null 2>&1; then DOWNLOADER=curl
    else die "neither wget nor curl is installed; install one of them and rerun"
    fi
  fi
  command -v "$DOWNLOADER" >/dev/null 2>&1 || die "$DOWNLOADER is not installed; install it or pass --downloader $([[ $DOWNLOADER == wget ]] && echo curl || echo wget)"
  local candidate
  for candidate in "${PYTHON:-}" python3 python; do
    if [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null 2>&1; then PYTHON_BIN="$candidate"; return 0; fi
  done
  die "python3 is needed to check and unzip the archives; install it or set PYTHON=/path/to/python3"
}

# One archive a line: NAME URL MIRROR_VARIABLE OUTPUT... (paths under DEST that it yields).
entry() {
  local base_var="$1" name="$2"
  shift 2
  printf '%s %s/%s %s %s\n' "$name" "${!base_var%/}" "$name" "$base_var" "$*"
}

archive_list() {
  local p="" split
  if [[ "$VERSION" == v2 ]]; then p="v2_"; fi
  entry VQA_BASE_URL "${p}Questions_Train_mscoco.zip" "${p}OpenEnded_mscoco_train2014_questions.json"
  entry VQA_BASE_URL "${p}Questions_Val_mscoco.zip" "${p}OpenEnded_mscoco_val2014_questions.json"
  entry VQA_BASE_URL "${p}Questions_Test_mscoco.zip" \
    "${p}OpenEnded_mscoco_test-dev2015_questions.json" "${p}OpenEnded_mscoco_test2015_questions.json"
  entry VQA_BASE_URL "${p}Annotations_Train_mscoco.zip" "${p}mscoco_train2014_annotations.json"
  entry VQA_BASE_URL "${p}Annotations_Val_mscoco.zip" "${p}mscoco_val2014_annotations.json"
  if ((WITH_FEATURES)); then
    entry KARPATHY_BASE_URL coco.zip coco/dataset.json coco/vgg_feats.mat
  fi
  if ((WITH_IMAGES)); then
    for split in train2014 val2014 test2015; do
      entry COCO_IMAGES_BASE_URL "$split.zip" "$split"
    done
  fi
}

outputs_present() {
  local output
  for output in "$@"; do
    [[ -e "$DEST/$output" ]] || return 1
  done
}

# Explain a downloader's exit status in words.
explain_status() {
  case "$DOWNLOADER:$1" in
    wget:4 | curl:6 | curl:7 | curl:28 | curl:35 | curl:56) echo "network failure: offline, DNS or proxy trouble" ;;
    wget:5 | curl:60) echo "SSL/TLS verification failed" ;;
    wget:8 | curl:22 | curl:37) echo "the server answered with an error, e.g. 404 Not Found" ;;
    curl:33) echo "the server cannot resume; delete the .part file and rerun" ;;
    wget:3 | curl:23) echo "could not write the file: disk full or no permission in $DEST" ;;
    *) echo "$DOWNLOADER exit status $1" ;;
  esac
}

download() {
  local url="$1" part="$2"
  case "$DOWNLOADER" in
    wget) wget -c --tries=3 --timeout=60 -O "$part" "$url" ;;
    curl) curl -fL --retry 3 --connect-timeout 60 -C - -o "$part" "$url" ;;
  esac
}

# Make sure DEST/NAME exists, downloading (or resuming) it when it does not.
fetch_archive() {
  local name="$1" url="$2" mirror_var="$3" status=0
  local zip="$DEST/$name" part="$DEST/$name.part"
  if [[ -f "$zip" ]]; then
    log "$name: found a complete download, extracting it"
    return 0
  fi
  if [[ -s "$part" ]]; then
    log "$name: resuming $url ($(wc -c <"$part" | tr -d ' ') bytes already here)"
  else
    log "$name: downloading $url"
  fi
  download "$url" "$part" || status=$?
  if ((status != 0)); then
    [[ -s "$part" ]] || rm -f -- "$part"
    log "$PROG: FAILED to download $url ($(explain_status "$status"))."
    log "  Check the connection (or proxy), or set $mirror_var to a mirror, then rerun: it resumes."
    return 1
  fi
  mv -f -- "$part" "$zip" || return 1
}

# CRC-check and extract ZIP into DEST via a temporary folder; exit 2 = corrupt,
# 3 = the archive lacks an expected output, 1 = I/O trouble (disk full...).
unzip_into_dest() {
  "$PYTHON_BIN" - "$@" <<'PY'
import os, shutil, sys, zipfile, zlib

zip_path, dest, expected = sys.argv[1], sys.argv[2], sys.argv[3:]
name = os.path.basename(zip_path)
tmp = os.path.join(dest, ".extract-" + name)


def merge(src, dst):
    """Move src's tree into dst, one rename per file or new folder."""
    for entry in os.listdir(src):
        source, target = os.path.join(src, entry), os.path.join(dst, entry)
        if os.path.isdir(source) and os.path.isdir(target):
            merge(source, target)
        else:
            os.replace(source, target)


def extract(archive):
    members = archive.infolist()
    step = max(len(members) // 10, 1)
    for done, member in enumerate(members, 1):
        archive.extract(member, tmp)  # reads to the end: checks the CRC; strips '..' and '/'
        if len(members) >= 1000 and done % step == 0:
            print(f"  {name}: {100 * done // len(members)}% of {len(members)} files", file=sys.stderr)


shutil.rmtree(tmp, ignore_errors=True)
try:
    try:
        with zipfile.ZipFile(zip_path) as archive:
            extract(archive)
    except (zipfile.BadZipFile, zlib.error, EOFError) as error:
        print(f"{name}: corrupt archive ({error})", file=sys.stderr)
        sys.exit(2)
    missing = [path for path in expected if not os.path.exists(os.path.join(tmp, path))]
    if missing:
        print(f"{name}: the archive has no {', '.join(missing)}", file=sys.stderr)
        sys.exit(3)
    merge(tmp, dest)
except OSError as error:
    print(f"{name}: could not extract ({error})", file=sys.stderr)
    sys.exit(1)
finally:
    shutil.rmtree(tmp, ignore_errors=True)
PY
}

extract_archive() {
  local name="$1" mirror_var="$2" status=0
  shift 2
  log "$name: checking and extracting"
  unzip_into_dest "$DEST/$name" "$DEST" "$@" || status=$?
  case "$status" in
    0) ((KEEP_ARCHIVES)) || rm -f -- "$DEST/$name" ;;
    2) rm -f -- "$DEST/$name"
       log "$PROG: FAILED: $name is corrupt; deleted it, rerun to download it again." ;;
    3) rm -f -- "$DEST/$name"
       log "$PROG: FAILED: $name is not the expected archive; deleted it. Check $mirror_var, then rerun." ;;
    *) log "$PROG: FAILED to extract $name; kept the archive. Free some disk space (or fix permissions) and rerun." ;;
  esac
  return "$status"
}

print_summary() {
  local fetched="$1" skipped="$2" failed="$3"
  log ""
  log "Summary for $DEST (VQA $VERSION):"
  printf '  %-15s%s\n' "extracted now:" "${fetched:-none}" "already there:" "${skipped:-none}" \
    "failed:" "${failed:-none}" >&2
  if [[ -n "$failed" ]]; then
    log "$PROG: some archives failed (see above); rerun to retry them, finished ones are skipped."
    return 1
  fi
}

main() {
  parse_args "$@"
  if ((DRY_RUN)); then
    if [[ -d "$DEST" ]]; then DEST="$(cd "$DEST" && pwd)"; fi
  else
    find_tools
    mkdir -p -- "$DEST" || die "cannot create $DEST; pick another --dest"
    DEST="$(cd "$DEST" && pwd)"
  fi
  trap 'log ""; log "$PROG: interrupted; rerun to resume, partial downloads are kept as *.part"; exit 130' INT TERM
  local name url mirror_var rest fetched="" skipped="" failed=""
  local -a outputs
  while read -r name url mirror_var rest <&3; do
    read -r -a outputs <<<"$rest"
    if outputs_present "${outputs[@]}"; then
      log "$name: already extracted, skipping"
      skipped+="${skipped:+ }$name"
    elif ((DRY_RUN)); then
      printf '%s\n' "$url"
    elif fetch_archive "$name" "$url" "$mirror_var" && extract_archive "$name" "$mirror_var" "${outputs[@]}"; then
      fetched+="${fetched:+ }$name"
    else
      failed+="${failed:+ }$name"
    fi
  done 3< <(archive_list)
  ((DRY_RUN)) || print_summary "$fetched" "$skipped" "$failed"
}

main "$@"
