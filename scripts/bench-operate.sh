#!/usr/bin/env bash
# What the operator features cost per request (access record and line, request id,
# Prometheus counters, token usage read from the answer's tail): the same hub + worker,
# built from a base commit and from the working tree, measured side by side in one run.
#
#   scripts/bench-operate.sh [--base COMMIT] [--duration SECONDS] [--connections N]
#
# For each build: wrk on non-streamed requests through hub + worker to (1) a static engine
# (nginx with canned answers: the proxy alone) and (2) the real llama-server on the tiny
# model (max_tokens 1); req/s, p50/p99, and CPU per request of hub and worker from
# /proc/PID/stat. The working tree runs twice: access lines off (`--log-level warning`,
# records and metrics still kept) and on (`info`, written to a file).
set -euo pipefail
source "$(dirname "$0")/lib/prepare.sh"
cd "$ROOT"
BASE=000ae1b; DURATION=10; CONNECTIONS=16
while (($#)); do
  case "$1" in
    --base) BASE="$2"; shift 2 ;;
    --duration) DURATION="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    *) echo "usage: $0 [--base COMMIT] [--duration S] [--connections N]" >&2; exit 2 ;;
  esac
done
install_prerequisites
for tool in wrk nginx; do
  command -v "$tool" >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$([[ $tool == nginx ]] && echo nginx-light || echo wrk)" >/dev/null; }
done
prepare_engine
prepare_model
source "$ROOT/scripts/lib/bench-common.sh"

# The base build: its sources in a worktree, built in this checkout's scratch folder's
# sibling so dependencies are not fetched again.
BASE_DIR="$HOME/.cache/caravan/bench-base-$BASE"
if [[ ! -x "$BASE_DIR/bin/caravan-hub" ]]; then
  say "building the base ($BASE) in release mode"
  rm -rf "$BASE_DIR/src"; mkdir -p "$BASE_DIR/bin"
  git worktree add -f --detach "$BASE_DIR/src" "$BASE" >&2
  # Start from this checkout's build folder: the dependencies are the same, already built.
  [[ -d "$ROOT/.build-bench-base" ]] || cp -a "$ROOT/.build" "$ROOT/.build-bench-base"
  # Clang's module caches record the folder they were built in: the copy's are rebuilt.
  find "$ROOT/.build-bench-base" -type d -name ModuleCache -prune -exec rm -rf {} +
  (cd "$BASE_DIR/src" && swift build -c release --static-swift-stdlib --scratch-path "$ROOT/.build-bench-base" \
     --product caravan-hub >&2 && swift build -c release --static-swift-stdlib --scratch-path "$ROOT/.build-bench-base" \
     --product caravan-worker >&2)
  cp "$ROOT/.build-bench-base/release/caravan-hub" "$ROOT/.build-bench-base/release/caravan-worker" "$BASE_DIR/bin/"
  git worktree remove --force "$BASE_DIR/src" >&2
fi
bench_setup operate caravan-hub caravan-worker
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cat > "$RUN/post.lua.tmpl" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"MODEL","messages":[{"role":"user","content":"Say hello"}],"max_tokens":1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer TOKEN"
LUA

# $1 label, $2 bin folder, $3 log level
run_variant() {
  local label="$1" bin="$2" level="$3" hub engine static dir
  hub=$(free_port); engine=$(free_port); static=$(free_port)
  dir="$RUN/$label"; mkdir -p "$dir"; cp "$RUN/client.secret" "$RUN/worker.secret" "$dir/"
  { bench_hub_yaml "$hub"; cat; } > "$dir/cluster.yaml" <<YAML
  - name: llama
    hubs: ["http://127.0.0.1:$hub"]
    listen: "127.0.0.1:0"
    llama_server: $LLAMA_SERVER_BIN
    ports: "$engine-$engine"
    preload: true
    models:
      - {name: tiny, path: $TINY_MODEL, args: ["-c", "2048", "--parallel", "4", "-t", "1"]}
  - name: static
    hubs: ["http://127.0.0.1:$hub"]
    listen: "127.0.0.1:0"
    llama_server: $ROOT/scripts/lib/static-engine.sh
    ports: "$static-$static"
    preload: true
    models:
      - {name: static, path: $TINY_MODEL}
YAML
  local pids=()
  CARAVAN_LOG_LEVEL="$level" "$bin/caravan-hub" --config "$dir/cluster.yaml" > "$dir/hub.log" 2>&1 & pids+=($!)
  wait_http "http://127.0.0.1:$hub/health"
  for worker in llama static; do
    CARAVAN_LOG_LEVEL="$level" "$bin/caravan-worker" --config "$dir/cluster.yaml" --name "$worker" > "$dir/$worker.log" 2>&1 & pids+=($!)
  done
  local token; token="$("$bin/caravan-hub" token --config "$dir/cluster.yaml" --sub bench --ttl 1h)"
  for model in tiny static; do
    for _ in $(seq 1 300); do
      curl -fs "http://127.0.0.1:$hub/v1/chat/completions" -H "Authorization: Bearer $token" \
        -d '{"model":"'$model'","messages":[],"max_tokens":1}' >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  local hub_pid="${pids[0]}" worker_pid
  for model in static tiny; do
    worker_pid=$([[ $model == tiny ]] && echo "${pids[1]}" || echo "${pids[2]}")
    sed "s/MODEL/$model/; s/TOKEN/$token/" "$RUN/post.lua.tmpl" > "$dir/post.lua"
    local h0 w0 out rps requests
    h0=$(cpu_ticks "$hub_pid"); w0=$(cpu_ticks "$worker_pid")
    out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$dir/post.lua" "http://127.0.0.1:$hub/v1/chat/completions" 2>&1)
    local h1 w1; h1=$(cpu_ticks "$hub_pid"); w1=$(cpu_ticks "$worker_pid")
    python3 - "$label" "$model" "$out" "$((h1 - h0))" "$((w1 - w0))" "$(getconf CLK_TCK)" <<'PY'
import re, sys
label, model, text, hub_ticks, worker_ticks, hz = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
def ms(p):
    m = re.search(r"^\s*%s\s+([\d.]+)(us|ms|s)\s*$" % re.escape(p), text, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
total = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
us = lambda ticks: ticks / hz / total * 1e6
print(f"| {label} | {model} | {rps:.0f} | {ms('50%'):.2f} | {ms('99%'):.2f} | {us(hub_ticks):.0f} | {us(worker_ticks):.0f} | {int(errors.group(1)) if errors else 0} |")
PY
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  sleep 1
}

echo "| build | engine | req/s | p50 ms | p99 ms | hub CPU µs/req | worker CPU µs/req | non-2xx |"
echo "|---|---|---|---|---|---|---|---|"
run_variant "base $BASE" "$BASE_DIR/bin" warning
run_variant "this tree, access lines off" "$BIN" warning
run_variant "this tree, access lines on" "$BIN" info
run_variant "base $BASE (again)" "$BASE_DIR/bin" warning
