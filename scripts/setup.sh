#!/usr/bin/env bash
# Set up avdet on a fresh Debian/Ubuntu machine: ffmpeg and Chromium (the report's browser tests) from apt, a
# virtualenv in .venv, avdet + test extras.
# CPU machines install torch through constraints-cpu.txt (no CUDA wheels). GPU: AVDET_GPU=1 scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

# ffmpeg for media; chromium + chromium-driver for the HTML report's browser tests (tests/test_report_browser.py)
APT=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || APT+=(ffmpeg)
command -v chromium >/dev/null || APT+=(chromium)
command -v chromedriver >/dev/null || APT+=(chromium-driver)
if [ ${#APT[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${APT[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ "${AVDET_GPU:-0}" = "1" ]; then
    .venv/bin/python -m pip install -q -e '.[dev,decord,hdf5]'
else
    .venv/bin/python -m pip install -q -c constraints-cpu.txt -e '.[dev,decord,hdf5]'
fi
echo "avdet installed in .venv ($(.venv/bin/avdet --help >/dev/null && echo ok))"
