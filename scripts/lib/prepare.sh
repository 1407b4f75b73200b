# Sourced by scripts/test.sh and scripts/quickstart.sh: installs what Caravan needs and
# prepares llama-server and the tiny model. Sets LLAMA_SERVER_BIN and TINY_MODEL.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
STATE="$ROOT/.caravan"
mkdir -p "$STATE"

say() { echo "==> $*" >&2; }

install_prerequisites() {
  local missing=()
  command -v swift >/dev/null 2>&1 || [[ -x /opt/swift/usr/bin/swift ]] || { echo "Swift toolchain not found (expected on PATH or in /opt/swift)" >&2; exit 1; }
  command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
  for tool in cmake g++ curl openssl python3; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    say "installing ${missing[*]} (apt-get)"
    local pkgs=()
    for tool in "${missing[@]}"; do
      case "$tool" in python3) pkgs+=(python3 python3-pip) ;; *) pkgs+=("$tool") ;; esac
    done
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
  if ! python3 -c "import gguf, numpy" >/dev/null 2>&1; then
    say "installing PyPI packages gguf, numpy"
    python3 -m pip install -q gguf numpy >&2
  fi
}

prepare_engine() {
  say "obtaining llama-server (cached under ~/.cache/caravan after the first build)"
  LLAMA_SERVER_BIN="$("$ROOT/scripts/install-engine.sh")"
  export LLAMA_SERVER_BIN
}

prepare_model() {
  TINY_MODEL="$STATE/models/tiny.gguf"
  mkdir -p "$(dirname "$TINY_MODEL")"
  if [[ ! -s "$TINY_MODEL" || "$ROOT/scripts/make-tiny-model.py" -nt "$TINY_MODEL" ]]; then
    say "generating the tiny test model"
    python3 "$ROOT/scripts/make-tiny-model.py" "$TINY_MODEL"
  fi
  export TINY_MODEL
}
