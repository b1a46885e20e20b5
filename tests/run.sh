#!/usr/bin/env bash
# The test command from the README: installs everything the tests need into .venv (creating it if
# needed), then runs the linters, the type checker, the import contract and the test suite.
# Usage: bash tests/run.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# llama-cpp-python builds from source the first time (about 9 minutes on 2 cores); pip caches
# the wheel, so later installs take seconds.
.venv/bin/python -m pip install --quiet -e '.[test]'

# The tests render Chinese text: they need a CJK font (tests/desktop/test_language.py fails
# without one). Install it where we can (Debian/Ubuntu as root, or with passwordless sudo).
if command -v fc-list >/dev/null && [ -z "$(fc-list :lang=zh 2>/dev/null)" ] \
        && command -v apt-get >/dev/null; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi
    echo "== installing a CJK font (fonts-noto-cjk)"
    $SUDO apt-get update -qq >/dev/null && \
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        fonts-noto-cjk >/dev/null || echo "could not install fonts-noto-cjk: install a CJK font"
fi
export QT_QPA_PLATFORM=offscreen

echo "== ruff"
.venv/bin/ruff check .
echo "== mypy"
.venv/bin/mypy mixtral_desk tests bench
echo "== import contract (core is Qt-free)"
.venv/bin/lint-imports
echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure, not a pass" >&2
    exit 1
fi
exit "$status"
