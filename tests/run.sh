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

# The tests render Chinese text; without a CJK font it shows as boxes (not an error).
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
