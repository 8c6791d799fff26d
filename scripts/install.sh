#!/usr/bin/env bash
# Create the virtualenv and install the project with pinned versions (constraints.txt).
# Called by `make install`; does nothing when the stamp for the current inputs exists.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
stamp="$VENV/.installed-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)"
if [ -f "$stamp" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
echo "==> installing Python packages (pinned by constraints.txt)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
# Extras (pyproject.toml): local = nx-27017 for `make run`, load = loadtests/ for `make bench` and
# `make sim`, dev = both plus the test and lint tools for `make test`.
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
rm -f "$VENV"/.installed-*
touch "$stamp"
