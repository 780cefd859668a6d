#!/bin/sh
# Fetch the dashboard's charting library (uPlot, MIT) from the npm registry into
# bot/web/static/vendor/ (git-ignored: we don't commit third-party code). Idempotent: does
# nothing when the pinned files are already there. The package tarball and the two
# files taken from it are checked against pinned sha256 sums.
#
#   tools/fetch_static.sh [DEST_DIR]      (default: bot/web/static/vendor next to this script)
#
# Needs `npm` (Debian: apt-get install npm). Without the files the dashboard still
# works, minus the chart.
set -eu  # POSIX sh (the Makefile runs it with sh)

VERSION="1.6.32"
TARBALL_SHA256="4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d"
JS_SHA256="19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f"
CSS_SHA256="df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04"

here="$(cd "$(dirname "$0")" && pwd)"
dest="${1:-$here/../bot/web/static/vendor}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

sha_ok() { # file sum
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

if sha_ok "$dest/uPlot.iife.min.js" "$JS_SHA256" && sha_ok "$dest/uPlot.min.css" "$CSS_SHA256"; then
  echo "uPlot $VERSION already in $dest"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
tarball="$tmp/uplot-$VERSION.tgz"
if ! command -v npm >/dev/null 2>&1; then
  echo "fetch_static: npm is needed to fetch uPlot $VERSION from the npm registry (apt-get install npm)" >&2
  exit 1
fi
(cd "$tmp" && npm pack --silent "uplot@$VERSION" >/dev/null)

if ! sha_ok "$tarball" "$TARBALL_SHA256"; then
  echo "fetch_static: uplot-$VERSION.tgz does not match the pinned sha256; refusing it" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$tmp" package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE
sha_ok "$tmp/package/dist/uPlot.iife.min.js" "$JS_SHA256" || { echo "fetch_static: uPlot.iife.min.js sha256 mismatch" >&2; exit 1; }
sha_ok "$tmp/package/dist/uPlot.min.css" "$CSS_SHA256" || { echo "fetch_static: uPlot.min.css sha256 mismatch" >&2; exit 1; }

install -m 0644 "$tmp/package/dist/uPlot.iife.min.js" "$dest/uPlot.iife.min.js"
install -m 0644 "$tmp/package/dist/uPlot.min.css" "$dest/uPlot.min.css"
install -m 0644 "$tmp/package/LICENSE" "$dest/uPlot.LICENSE"
echo "uPlot $VERSION -> $dest"
