# Sourced by the benchmark scripts after lib/prepare.sh: release binaries, a scratch
# folder whose processes are stopped on exit, and small helpers.
#   bench_setup NAME PRODUCT...   builds PRODUCTs in release mode; sets BIN, RUN, PIDS
# CARAVAN_BENCH_BIN=DIR takes caravan-hub and caravan-worker from DIR instead (another
# build, to compare two builds on the same machine); the other products still come from here.
# CARAVAN_BENCH_NO_BUILD=1 measures the release binaries already built, without building.
# Release builds link the Swift runtime statically, as the container image does: that is
# what runs in production, and it starts smaller (~5 MiB less RSS) and runs faster.
bench_setup() {
  local name="$1"; shift
  if [[ -n "${CARAVAN_BENCH_NO_BUILD:-}" ]]; then
    say "using the release binaries as built (CARAVAN_BENCH_NO_BUILD)"
  else
    say "building release binaries"
    for product in "$@"; do swift build -c release --static-swift-stdlib --product "$product" >&2; done
  fi
  BIN="$(swift build -c release --show-bin-path)"
  RUN="$(mktemp -d "/tmp/caravan-$name.XXXXXX")"
  if [[ -n "${CARAVAN_BENCH_BIN:-}" ]]; then
    local mixed="$RUN/bin"; mkdir -p "$mixed"
    for file in "$BIN"/*; do [[ -f "$file" && -x "$file" ]] && ln -s "$file" "$mixed/"; done
    ln -sf "$CARAVAN_BENCH_BIN/caravan-hub" "$mixed/caravan-hub"; ln -sf "$CARAVAN_BENCH_BIN/caravan-worker" "$mixed/caravan-worker"
    say "caravan-hub and caravan-worker from $CARAVAN_BENCH_BIN"
    BIN="$mixed"
  fi
  PIDS=()
  trap bench_cleanup EXIT
  openssl rand -hex 32 > "$RUN/client.secret"; openssl rand -hex 32 > "$RUN/worker.secret"
}
bench_cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if ((status)); then echo "logs kept in $RUN" >&2; else rm -rf "$RUN"; fi
}
# The hub part of a benchmark cluster file for a hub on port $1, up to "workers:".
bench_hub_yaml() {  # $1 = API port, $2 = tunnel port (optional)
  cat <<YAML
hub:
  listen: "127.0.0.1:$1"
  heartbeat_interval: 1s${2:+
  tunnel_listen: \"127.0.0.1:$2\"}
  auth: {client_secret_file: client.secret, worker_secret_file: worker.secret}
workers:
YAML
}
# The prefill-bound benchmark model (256 dims, 6 layers, ~13-20 MB) with $1 tokens of trained
# context, written to $2 unless it is there and newer than its generator.
bench_model() {
  local ctx="$1" path="$2"
  if [[ ! -s "$path" || "$ROOT/scripts/make-tiny-model.py" -nt "$path" ]]; then
    say "generating the benchmark model (256 dims, 6 layers, $ctx tokens of context)"
    python3 "$ROOT/scripts/make-tiny-model.py" "$path" --dim 256 --layers 6 --ctx "$ctx"
  fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
# Waits until the hub at $1 serves a chat for model $3 with credential $2 (the model loaded).
wait_chat() {
  for _ in $(seq 1 100); do
    curl -fs "$1/v1/chat/completions" -H "Authorization: Bearer $2" \
      -d "{\"model\":\"$3\",\"messages\":[],\"max_tokens\":1}" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "timeout waiting for $1 to serve $3" >&2; return 1
}
wait_http() { for _ in $(seq 1 300); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "timeout waiting for $1" >&2; return 1; }
rss() { ps -o rss= -p "$1" | awk '{printf "%.1f", $1/1024}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
