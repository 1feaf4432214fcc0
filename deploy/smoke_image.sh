#!/usr/bin/env bash
# Build the runtime image with podman and smoke-test it, on a machine with no Docker daemon and no
# registry: the base image is made locally (deploy/local_base.sh) and pip installs from a wheelhouse
# downloaded on the host, so the build itself runs with no network.
#
#   deploy/smoke_image.sh        (as root; installs podman, runc and debootstrap from Debian if missing)
#
# Checks: a build without models/ fails with the gate's message; the image builds; it starts with a
# read-only root, /tmp as tmpfs, no capabilities and no new privileges; /health/ready answers; a real
# image is predicted and counted in /metrics; the HEALTHCHECK passes; PID 1 is not root; there is no
# compiler, shell, package manager, torch or training code; the image's pydicom decodes JPEG 2000,
# JPEG-LS and JPEG DICOM files (pydicom's own test files, sent in on stdin) with the pylibjpeg plugins
# to the uncompressed file's pixels; the size is at most MAX_IMAGE_MB; SIGTERM stops it with exit 0.
# Last line: `image <tag> <size> MB, ready in <seconds> s`.
#
# Env: MODEL_DIR   the models folder to build from (default models/; when that has no card, a tiny
#                  model from the service tests' fixture builder, said so in the output)
#      PREDICT_IMAGE  the image to predict (default a test image of ../shared/data, else a made one)
#      BASE_IMAGE  a Python base to build on instead of the local one (e.g. python:3.11-slim)
#      IMAGE_TAG (localhost/chest-cancer-net:smoke)  MAX_IMAGE_MB (200)  READY_TIMEOUT_S (120)
#      CACHE_DIR (~/.cache/chest-cancer-net: base tarball, wheelhouse)  PYTHON (.venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${IMAGE_TAG:-localhost/chest-cancer-net:smoke}
max_mb=${MAX_IMAGE_MB:-200}
cache=${CACHE_DIR:-$HOME/.cache/chest-cancer-net}
export CACHE_DIR=$cache
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
name=chestnet-smoke-$$
work=$(mktemp -d)
started=$(date +%s)

say() { printf 'smoke: %s\n' "$*" >&2; }
fail() {
  say "FAILED: $*"
  exit 1
}
cleanup() {
  podman rm --force --time 0 "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- tools -----------------------------------------------------------------------------------------
missing=()
command -v podman >/dev/null || missing+=(podman runc)
[ -n "${BASE_IMAGE:-}" ] || command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    fail "needs ${missing[*]} (run as root on Debian to have them installed)"
  fi
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Podman asks runc for nofile and nproc limits of about a million; where the caller lacks
# CAP_SYS_RESOURCE (sandboxes, CI runners) runc cannot raise them, so ask for modest ones.
nofile=$(ulimit -Hn)
if [ "$nofile" = unlimited ] || [ "$nofile" -gt 8192 ]; then nofile=8192; fi
limits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=4096:4096")

# --- inputs: base image, wheelhouse, models, the image to predict ----------------------------------
base=${BASE_IMAGE:-$(deploy/local_base.sh)}
say "base image $base"

lock=deploy/requirements.serve.txt
wheels=$cache/wheelhouse-$(sha256sum "$lock" | cut -c1-12)
if [ ! -d "$wheels" ]; then
  # The base's Python: CPython 3.11 on glibc 2.36 (bookworm). pip takes each --platform literally.
  arch=$(uname -m)
  platforms=(--platform "manylinux2014_$arch")
  for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
  say "downloading the locked wheels (CPython 3.11, manylinux $arch)"
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp "${platforms[@]}" -r "$lock" -d "$wheels.part" \
    2> >(grep -v '^WARNING: Location' >&2)
  mv "$wheels.part" "$wheels"
fi

model_dir=${MODEL_DIR:-models}
model_note=""
if [ -z "${MODEL_DIR:-}" ] && [ ! -f models/model.json ]; then
  model_dir=$work/tiny-models
  "$python" - "$model_dir" <<'EOF' 2>"$work/tiny.log" || fail "models/ is empty and the tiny fixture model could not be made (needs onnx: $(tail -n 1 "$work/tiny.log")): run dvc repro, or set MODEL_DIR"
import sys
from pathlib import Path
sys.path.insert(0, "tests/service")
from svc_models import write_model_dir
write_model_dir(Path(sys.argv[1]))
EOF
  model_note=" (tiny fixture model: models/ is empty)"
fi
[ -f "$model_dir/model.json" ] || fail "$model_dir has no model.json: run dvc repro (or dvc pull), or set MODEL_DIR"

image=${PREDICT_IMAGE:-}
if [ -z "$image" ]; then
  image=$(find ../shared/data/chest-ct-kaggle/Data/test/adenocarcinoma -type f -name '*.png' 2>/dev/null | sort | head -n 1 || true)
fi
if [ -z "$image" ]; then
  image=$work/made.png
  "$python" -c "from PIL import Image, ImageDraw; i = Image.new('L', (256, 256)); ImageDraw.Draw(i).ellipse((40, 60, 220, 200), fill=180); i.save('$image')"
fi

# --- the build context: exactly what the Dockerfile reads ------------------------------------------
ctx=$work/ctx
mkdir -p "$ctx/deploy"
cp Dockerfile .dockerignore "$ctx/"
cp deploy/check_models.py deploy/strip_elf.py deploy/runtime_rootfs.py "$lock" "$ctx/deploy/"
cp -r service "$ctx/service"
cp -r "$wheels" "$ctx/wheelhouse"
build=(podman build --format docker "${limits[@]}" --network none --build-arg "BASE_IMAGE=$base")

# The gate: without models/ the build must stop with the check's own message.
if "${build[@]}" --target model "$ctx" >"$work/nomodel.log" 2>&1; then
  fail "a build without models/ succeeded"
fi
grep -q "models check failed: models/model.json is missing" "$work/nomodel.log" ||
  fail "a build without models/ failed without the gate's message: $(tail -n 3 "$work/nomodel.log")"
say "no models/: the build stops with \"$(grep -o 'models check failed: [^:]*' "$work/nomodel.log" | head -n 1)\""

cp -r "$model_dir" "$ctx/models"
t=$(date +%s)
"${build[@]}" --build-arg "GIT_SHA=$(git rev-parse HEAD 2>/dev/null || echo unknown)" -t "$tag" "$ctx" \
  >"$work/build.log" 2>&1 || {
  tail -n 30 "$work/build.log" >&2
  fail "podman build"
}
passed=$(grep -h "models check passed" "$work/build.log" || echo "models check passed (cached: the same models/ as the last build)")
say "$passed"
say "built $tag in $(($(date +%s) - t)) s$model_note"

# --- run -------------------------------------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
t0=$(python3 -c 'import time; print(time.time())')
podman run --detach --name "$name" "${limits[@]}" \
  --read-only --tmpfs /tmp:rw,nosuid,nodev,size=64m --cap-drop ALL --security-opt no-new-privileges \
  --memory 768m --publish "127.0.0.1:$port:8000" "$tag" >/dev/null 2>"$work/run.log" ||
  fail "podman run: $(cat "$work/run.log")"
ready_s=$(python3 deploy/smoke_probe.py ready "$url" "$t0" "${READY_TIMEOUT_S:-120}") || {
  podman logs "$name" 2>&1 | tail -n 20 >&2
  fail "/health/ready"
}
say "ready in $ready_s s"

say "predicted $image: $(python3 deploy/smoke_probe.py predict "$url" "$image")" || fail "prediction"
# A DICOM CT slice (pydicom's bundled CT_small.dcm): the image's pydicom and codecs decode it.
dicom=$("$python" -c "from pydicom.data import get_testdata_file; print(get_testdata_file('CT_small.dcm'))" 2>/dev/null || true)
if [ -n "$dicom" ]; then
  say "predicted DICOM $(basename "$dicom"): $(python3 deploy/smoke_probe.py predict "$url" "$dicom")" || fail "DICOM prediction"
fi
podman healthcheck run "$name" >/dev/null 2>&1 || fail "the image's HEALTHCHECK did not pass"
# The image has Python and nothing else to run: every check inside it is Python.
in_image() { podman exec -i "$name" python -c "$@"; }
uid=$(in_image "print(open('/proc/1/status').read().split('Uid:')[1].split()[0])")
[ "$uid" != 0 ] || fail "PID 1 runs as root"
in_image "open('/app/x', 'w')" 2>/dev/null && fail "the root filesystem is writable"
in_image '
import importlib.util, shutil, sys
bad = [m for m in ("torch", "training", "export", "onnx", "pip") if importlib.util.find_spec(m)]
bad += [c for c in ("gcc", "cc", "g++", "sh", "bash", "apt-get", "dpkg") if shutil.which(c)]
sys.exit(f"found in the image: {bad}" if bad else 0)' || fail "the image carries build or training tools"
# The DICOM codecs: each compressed file decoded in the image by the plugin named (its test files are
# not in the image, so the host's copy is piped in), and the lossless ones compared with MR_small.dcm.
decode() {
  in_image '
import hashlib, io, sys
from pydicom import dcmread
from pydicom.pixels import pixel_array
ds = dcmread(io.BytesIO(sys.stdin.buffer.read()))
a = pixel_array(ds, decoding_plugin=sys.argv[1]) if sys.argv[1] else pixel_array(ds)
print(a.shape, a.dtype, hashlib.sha256(a.tobytes()).hexdigest()[:16])' "$2" <"$1"
}
testdata=$("$python" -c "import pydicom.data, os; print(os.path.dirname(pydicom.data.get_testdata_file('MR_small.dcm')))" 2>/dev/null || true)
if [ -n "$testdata" ]; then
  plain=$(decode "$testdata/MR_small.dcm" "") || fail "MR_small.dcm did not decode in the image"
  for pair in MR_small_jp2klossless.dcm:pylibjpeg MR_small_jpeg_ls_lossless.dcm:pylibjpeg; do
    got=$(decode "$testdata/${pair%%:*}" "${pair##*:}") || fail "${pair%%:*} did not decode in the image"
    [ "$got" = "$plain" ] || fail "${pair%%:*} decoded to $got, not MR_small.dcm's $plain"
  done
  rgb=$(decode "$testdata/SC_rgb_jpeg_dcmtk.dcm" pylibjpeg) || fail "SC_rgb_jpeg_dcmtk.dcm (JPEG baseline) did not decode in the image"
  say "DICOM codecs in the image: JPEG 2000 and JPEG-LS lossless = MR_small.dcm $plain; JPEG baseline $rgb"
else
  say "no pydicom test files on the host: the DICOM codec check is skipped"
fi
memory=$(podman stats --no-stream --format '{{.MemUsage}}' "$name" 2>/dev/null | cut -d/ -f1 || true)
say "user $uid, read-only root, no compiler/shell/apt/torch/training code, memory ${memory:-?}"

size_mb=$(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f", $1 / 1e6}')
[ "$size_mb" -le "$max_mb" ] || fail "the image is $size_mb MB, over $max_mb MB"

t=$(date +%s)
podman stop --time 30 "$name" >/dev/null 2>&1
code=$(podman inspect --format '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "after SIGTERM the service exited $code"
say "SIGTERM: exit 0 after $(($(date +%s) - t)) s; whole smoke $(($(date +%s) - started)) s"

echo "image $tag $size_mb MB, ready in $ready_s s"
