#!/usr/bin/env bash
# Create .venv and install the project from uv.lock, every file checked against its hash: the
# runtime dependencies plus the extras named as arguments (pyproject.toml: local = nx-27017 for
# `make run`, load = loadtests/ for `make bench` and `make sim`, dev = both plus the test and lint
# tools). uv itself comes from requirements/bootstrap.txt (pinned, with hashes) through the venv's
# own pip, so a fresh Debian 12 needs nothing but python3.11 and its venv module.
#
# One stamp per installed set under the hash of the lock makes the second run instant: `make test`
# then `make run` installs nothing (dev includes local), `make run` then `make test` adds dev.
# The stamps hang on uv.lock alone (ruff's settings in pyproject.toml are no reason to reinstall):
# a dependency changed in pyproject.toml without `make lock` fails tests/test_dependencies.py (and
# any sync below, with uv's own sentence: --locked).
# `install.sh --bootstrap` only creates .venv with uv in it (what `make lock` needs).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/steps.sh
. scripts/steps.sh
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

bootstrap_only=false
if [ "${1:-}" = "--bootstrap" ]; then
  bootstrap_only=true
  shift
fi
if ! $bootstrap_only; then
  lock_id=$(cat uv.lock requirements/bootstrap.txt | sha1sum | cut -c1-12)
  stamps="$VENV/.installed/$lock_id"
  missing=()
  for set in runtime "$@"; do
    [ -f "$stamps/$set" ] || [ -f "$stamps/dev" ] || missing+=("$set")
  done
  [ ${#missing[@]} -eq 0 ] && exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  step_begin "Python environment" "creating $VENV with $("$PYTHON" --version 2>&1) (about 10 s)"
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    rm -rf "$VENV"
    echo "Creating $VENV needs Debian's python3.11-venv: run 'sudo apt-get install -y python3.11-venv' (make run and make test install it when run as root), then run make again." >&2
    exit 1
  fi
  step_end
fi

uv_version=$(sed -n 's/^uv==\([0-9][0-9.]*\).*/\1/p' requirements/bootstrap.txt)
if [ "$("$VENV/bin/uv" --version 2>/dev/null | cut -d' ' -f2)" != "$uv_version" ]; then
  step_begin "installer" "uv $uv_version into $VENV with pip, hashes checked (about 10 s)"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
    -r requirements/bootstrap.txt
  step_end
fi
$bootstrap_only && exit 0

label=runtime
# inexact: what another target installed stays. Bytecode now, once: where PYTHONDONTWRITEBYTECODE
# is set (as on our machines), every start would compile the dependencies again, seconds each time.
sync=(--locked --inexact --compile-bytecode)
for extra in "$@"; do
  label="$label + $extra"
  sync+=(--extra "$extra")
done
case " $* " in
  *" dev "*) estimate="about 2 min the first time, 1 min after make run" ;;
  *" load "*) estimate="about 90 s the first time" ;;
  *) estimate="about 1 min the first time" ;;
esac
step_begin "Python packages" "$label from uv.lock ($estimate; uv's cache makes a rebuild quicker)"
UV_PROJECT_ENVIRONMENT="$VENV" UV_PYTHON_DOWNLOADS=never "$VENV/bin/uv" sync "${sync[@]}"
step_end

rm -f "$VENV"/.installed-*  # stamps of the constraints.txt era
mkdir -p "$stamps"
find "$VENV/.installed" -mindepth 1 -maxdepth 1 ! -name "$lock_id" -exec rm -rf {} +
for set in runtime "$@"; do
  touch "$stamps/$set"
done
