#!/usr/bin/env bash
# Worker measurements for docs/worker.md (release build, the real llama-server, the tiny
# model): the lazy start of a model through the hub (first request vs warm requests, three
# rounds, the model unloaded by its ttl in between) and the worker's resident memory.
#
#   scripts/bench-worker.sh
set -euo pipefail
source "$(dirname "$0")/lib/prepare.sh"
cd "$ROOT"

install_prerequisites
prepare_engine
prepare_model
source "$ROOT/scripts/lib/bench-common.sh"
bench_setup bench-worker caravan-hub caravan-worker

HUB=$(free_port)
{ bench_hub_yaml "$HUB"; cat; } > "$RUN/cluster.yaml" <<YAML
  - name: bench
    hubs: ["http://127.0.0.1:$HUB"]
    listen: "127.0.0.1:0"
    llama_server: $LLAMA_SERVER_BIN
    state_dir: $RUN
    ttl: 2s
    models:
      - {name: tiny, path: $TINY_MODEL, ctx: 2048, parallel: 4, args: ["-t", "1"]}
YAML
CARAVAN_LOG_LEVEL=warning "$BIN/caravan-hub" --config "$RUN/cluster.yaml" > "$RUN/hub.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$HUB/health"
CARAVAN_LOG_LEVEL=warning "$BIN/caravan-worker" --config "$RUN/cluster.yaml" --name bench > "$RUN/worker.log" 2>&1 &
WORKER=$!
PIDS+=($WORKER)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$HUB/health/ready" >/dev/null && break; sleep 0.1; done
TOKEN="$("$BIN/caravan-hub" token --config "$RUN/cluster.yaml" --sub bench --ttl 1h)"
sleep 2
IDLE_RSS=$(rss "$WORKER")

ask() {
  curl -fs -o /dev/null -w '%{time_total}\n' "http://127.0.0.1:$HUB/v1/chat/completions" -H "Authorization: Bearer $TOKEN" \
    -d '{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":8}'
}
engine_running() { pgrep -P "$WORKER" -f llama-server >/dev/null; }

FIRST=(); WARM=()
for round in 1 2 3; do
  for _ in $(seq 1 100); do engine_running || break; sleep 0.1; done  # unloaded by the ttl
  FIRST+=("$(ask)")
  for _ in $(seq 1 20); do WARM+=("$(ask)"); done
  LOADED_RSS=$(rss "$WORKER")
  sleep 2.5
done
for _ in $(seq 1 100); do engine_running || break; sleep 0.1; done
UNLOADED_RSS=$(rss "$WORKER")

median_ms() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]*1000}'; }
cat <<EOF2
Measured $(date -u +%Y-%m-%d) on $(nproc) cores, commit $(git rev-parse --short HEAD), \`scripts/bench-worker.sh\`:

| what | value |
|---|---:|
| first request through the hub (lazy start of llama-server + tiny model), median of 3 | $(median_ms "${FIRST[@]}") ms |
| warm request through the hub, median of 60 | $(median_ms "${WARM[@]}") ms |
| worker RSS, idle, no model loaded | $IDLE_RSS MiB |
| worker RSS with the model loaded, after 21 requests | $LOADED_RSS MiB |
| worker RSS after the ttl unloaded the model | $UNLOADED_RSS MiB |

First requests: ${FIRST[*]} s.
EOF2
