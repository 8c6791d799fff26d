#!/usr/bin/env bash
# Refresh the vendored browser libraries in frontend/vendor/ from the npm registry.
# Usage: scripts/vendor.sh [LEAFLET_VERSION] [SOCKETIO_CLIENT_VERSION] [SWAGGER_UI_DIST_VERSION] [UPLOT_VERSION]
# The pages load these files directly (no build step); VERSIONS records what was copied.
# The copies are committed, so a fresh clone needs neither npm nor the network; run this only to
# refresh them, then commit the result.
set -euo pipefail
leaflet="${1:-1.9.4}"
socketio="${2:-4.8.4}"
swaggerui="${3:-5.35.0}"
uplot="${4:-1.6.32}"
# The npm registry's sha512 of each pinned tarball (`npm view NAME@VERSION dist.integrity`). A tarball
# that does not match stops the refresh; a version passed on the command line is not pinned yet, so its
# integrity is printed to be pasted here.
declare -A INTEGRITY=(
  [leaflet@1.9.4]="sha512-nxS1ynzJOmOlHp+iL3FyWqK89GtNL8U8rvlMOsQdTTssxZwCXh8N2NB3GDQOL+YR3XnWyZAxwQixURb+FA74PA=="
  [socket.io-client@4.8.4]="sha512-7wjKAvVXYOJsbmUgkWbnhPD4bFpkqrUR0++XOjpGFmqDqsqV1CI93VTraeExLxpjxEqrWgFoSRZu1ihjLWfkAA=="
  [swagger-ui-dist@5.35.0]="sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ=="
  [uplot@1.6.32]="sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
)
root="$(cd "$(dirname "$0")/.." && pwd)"
vendor="$root/frontend/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

command -v npm >/dev/null 2>&1 || { echo "npm is needed to refresh frontend/vendor (apt-get install npm)" >&2; exit 1; }

fetch() {  # fetch NAME VERSION -> unpacked package dir on stdout
  local name="$1" version="$2" tarball actual
  tarball="$(cd "$work" && npm pack --silent "$name@$version")"
  actual="sha512-$(node -e 'process.stdout.write(require("crypto").createHash("sha512").update(require("fs").readFileSync(process.argv[1])).digest("base64"))' "$work/$tarball")"
  if [ -z "${INTEGRITY[$name@$version]:-}" ]; then
    echo "$name@$version is not pinned in scripts/vendor.sh; its integrity is $actual" >&2
  elif [ "$actual" != "${INTEGRITY[$name@$version]}" ]; then
    echo "$name@$version: the tarball's integrity $actual is not the pinned ${INTEGRITY[$name@$version]}" >&2
    exit 1
  fi
  mkdir -p "$work/$name"
  tar -xzf "$work/$tarball" -C "$work/$name"
  echo "$work/$name/package"
}

lf="$(fetch leaflet "$leaflet")"
sio="$(fetch socket.io-client "$socketio")"
sw="$(fetch swagger-ui-dist "$swaggerui")"
up="$(fetch uplot "$uplot")"

rm -rf "$vendor/leaflet" "$vendor/socket.io" "$vendor/swagger-ui" "$vendor/uplot"
mkdir -p "$vendor/leaflet/images" "$vendor/socket.io" "$vendor/swagger-ui" "$vendor/uplot"
cp "$lf/dist/leaflet.js" "$lf/dist/leaflet.css" "$vendor/leaflet/"
cp "$lf/dist/images/"*.png "$vendor/leaflet/images/"
cp "$lf/LICENSE" "$vendor/leaflet/LICENSE"
cp "$sio/dist/socket.io.esm.min.js" "$vendor/socket.io/"
cp "$sio/LICENSE" "$vendor/socket.io/LICENSE"
# /api/docs: the classic bundle (it defines window.SwaggerUIBundle; the "es-bundle" is CommonJS, not an
# ES module) and its stylesheet, started by frontend/js/apidocs.js so the page needs no inline script.
cp "$sw/swagger-ui-bundle.js" "$sw/swagger-ui-bundle.js.LICENSE.txt" "$sw/swagger-ui.css" "$vendor/swagger-ui/"
cp "$sw/LICENSE" "$sw/NOTICE" "$vendor/swagger-ui/"
# The console's analytics charts: the ES module build (admin.js imports it when the Analytics tab
# opens) and its stylesheet.
cp "$up/dist/uPlot.esm.js" "$up/dist/uPlot.min.css" "$up/LICENSE" "$vendor/uplot/"

# The source maps are not vendored; drop the comments that point at them so browsers' developer
# tools do not go looking for missing files.
sed -i '/^\/\/# sourceMappingURL=/d' "$vendor/leaflet/leaflet.js" "$vendor/socket.io/socket.io.esm.min.js"
sed -i 's|/\*# sourceMappingURL=[^*]*\*/||' "$vendor/swagger-ui/swagger-ui.css"

cat > "$vendor/VERSIONS" <<VERSIONS
# Vendored by scripts/vendor.sh from the npm registry; do not edit these files by hand.
# Copied: leaflet dist/leaflet.js, leaflet.css, images/; socket.io-client dist/socket.io.esm.min.js;
# swagger-ui-dist swagger-ui-bundle.js, swagger-ui.css; uplot dist/uPlot.esm.js, uPlot.min.css
# (source-map comments removed).
leaflet $(node -p "require('$lf/package.json').version" 2>/dev/null || echo "$leaflet")
socket.io-client $(node -p "require('$sio/package.json').version" 2>/dev/null || echo "$socketio")
swagger-ui-dist $(node -p "require('$sw/package.json').version" 2>/dev/null || echo "$swaggerui")
uplot $(node -p "require('$up/package.json').version" 2>/dev/null || echo "$uplot")
VERSIONS
echo "vendored into $vendor:"
cat "$vendor/VERSIONS"
