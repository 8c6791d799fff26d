#!/usr/bin/env bash
# Install the Debian packages a target needs, only when missing: `run` needs redis-server, and
# python3.11-venv while .venv does not exist yet; `test` adds nginx (proxy tests) and chromium
# (page tests). apt-get update runs once, and only when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/steps.sh
. scripts/steps.sh
VENV=${VENV:-.venv}
want=(redis-server venv)
[ "${1:-run}" = "test" ] && want+=(nginx chromium)
missing=()
seconds=0  # a rough estimate on an ordinary connection, to say before apt starts
for pkg in "${want[@]}"; do
  case "$pkg" in
    redis-server) command -v redis-server >/dev/null 2>&1 || { missing+=(redis-server); seconds=$((seconds + 20)); } ;;
    venv) [ -x "$VENV/bin/python" ] || python3.11 -c 'import ensurepip' >/dev/null 2>&1 \
            || { missing+=(python3.11-venv); seconds=$((seconds + 10)); } ;;
    nginx) command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] \
            || { missing+=(nginx-light); seconds=$((seconds + 10)); } ;;
    chromium) [ -x /usr/bin/chromium ] || { missing+=(chromium fonts-dejavu-core); seconds=$((seconds + 90)); } ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  if [ ${#missing[@]} -eq 1 ]; then what="Debian's ${missing[0]} is missing and installing it"
  else what="Debian's ${missing[*]} are missing and installing them"; fi
  echo "$what needs root: run 'sudo apt-get install -y ${missing[*]}' (or this make command with sudo), then run make again." >&2
  exit 1
fi
step_begin "apt" "installing ${missing[*]} (about ${seconds} s)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged services; we run our own on private ports, so stop theirs.
if command -v service >/dev/null 2>&1; then
  service redis-server stop >/dev/null 2>&1 || true
  service nginx stop >/dev/null 2>&1 || true
fi
step_end
