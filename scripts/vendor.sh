#!/usr/bin/env bash
# Refresh the vendored browser libraries in frontend/vendor/ from the npm registry.
# Usage: scripts/vendor.sh [LEAFLET_VERSION] [SOCKETIO_CLIENT_VERSION]
# The pages load these files directly (no build step); VERSIONS records what was copied.
set -euo pipefail
leaflet="${1:-1.9.4}"
socketio="${2:-4.8.4}"
root="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$root/frontend/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

command -v npm >/dev/null 2>&1 || { echo "npm is needed to refresh frontend/vendor (apt-get install npm)" >&2; exit 1; }

fetch() {  # fetch NAME VERSION -> unpacked package dir on stdout
  local name="$1" version="$2" tarball
  tarball="$(cd "$work" && npm pack --silent "$name@$version")"
  mkdir -p "$work/$name"
  tar -xzf "$work/$tarball" -C "$work/$name"
  echo "$work/$name/package"
}

lf="$(fetch leaflet "$leaflet")"
sio="$(fetch socket.io-client "$socketio")"

rm -rf "$vendor/leaflet" "$vendor/socket.io"
mkdir -p "$vendor/leaflet/images" "$vendor/socket.io"
cp "$lf/dist/leaflet.js" "$lf/dist/leaflet.css" "$vendor/leaflet/"
cp "$lf/dist/images/"*.png "$vendor/leaflet/images/"
cp "$lf/LICENSE" "$vendor/leaflet/LICENSE"
cp "$sio/dist/socket.io.esm.min.js" "$vendor/socket.io/"
cp "$sio/LICENSE" "$vendor/socket.io/LICENSE"

# The source maps are not vendored; drop the comments that point at them so browsers' developer
# tools do not go looking for missing files.
sed -i '/^\/\/# sourceMappingURL=/d' "$vendor/leaflet/leaflet.js" "$vendor/socket.io/socket.io.esm.min.js"

cat > "$vendor/VERSIONS" <<VERSIONS
# Vendored by scripts/vendor.sh from the npm registry; do not edit these files by hand.
# Copied: leaflet dist/leaflet.js, leaflet.css, images/; socket.io-client dist/socket.io.esm.min.js
# (source-map comments removed).
leaflet $(node -p "require('$lf/package.json').version" 2>/dev/null || echo "$leaflet")
socket.io-client $(node -p "require('$sio/package.json').version" 2>/dev/null || echo "$socketio")
VERSIONS
echo "vendored into $vendor:"
cat "$vendor/VERSIONS"
