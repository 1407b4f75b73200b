#!/usr/bin/env bash
# Cache-aware routing against weighted round-robin and an oracle, in one run
# (docs/benchmarks.md, "Conversations and prompt caches").
#
#   scripts/bench-cache.sh            # W1-W4, both policies, the oracle
#   WORKLOADS="W1 W4" POLICIES=cache_aware ORACLE=0 scripts/bench-cache.sh   # a part of it
#
# Four workers, each one llama-server with 2 slots and -t 1, serving a random-weight
# 256-dim, 6-layer llama the project generates (prefill dominates: ~1 s for 1,600 tokens
# on one core, ~0.1 s when cached). Two hubs run on the cluster file; W1-W3 go through the
# first, W4 alternates each conversation's turns between both. The oracle sends each
# conversation straight to one fixed engine (four plain llama-servers, no hub).
# Workloads: scripts/lib/cache-workload.py. Prints one line per (workload, route).
set -euo pipefail
source "$(dirname "$0")/lib/prepare.sh"
cd "$ROOT"
install_prerequisites
prepare_engine
source "$ROOT/scripts/lib/bench-common.sh"
MODEL="$STATE/models/bench-256x6.gguf"
bench_model 8192 "$MODEL"
bench_setup cache caravan-hub caravan-worker
WORKLOAD="python3 $ROOT/scripts/lib/cache-workload.py"
ENGINE_ARGS=(-c 8192 --parallel 2 -t 1)
NAMES=(w1 w2 w3 w4)

report() {  # $1 workload, $2 route, $3 JSON
  echo "$1 $2 $3"
}

# --- The oracle: four plain engines, conversation i always on engine i mod 4. -----------
oracle() {
  local urls=() pids=()
  for name in "${NAMES[@]}"; do
    local port; port=$(free_port)
    "$LLAMA_SERVER_BIN" -m "$MODEL" --host 127.0.0.1 --port "$port" "${ENGINE_ARGS[@]}" >"$RUN/oracle-$name.log" 2>&1 &
    pids+=($!); PIDS+=($!)
    urls+=(--engine "http://127.0.0.1:$port")
  done
  for url in "${urls[@]}"; do [[ "$url" == --engine ]] || wait_http "$url/health"; done
  report W1 oracle "$($WORKLOAD W1 "${urls[@]}")"
  report W4 oracle "$($WORKLOAD W4 "${urls[@]}")"
  for pid in "${pids[@]}"; do kill "$pid"; done
  wait "${pids[@]}" 2>/dev/null || true
}

# --- A cluster: two hubs on one file, four workers, the given policy. -------------------
dispatched() {  # requests each worker got, as "w1=N w2=N ..."
  curl -fs -H "Authorization: Bearer $ADMIN" "$HUB1/admin/workers" | python3 -c '
import json, sys
workers = json.load(sys.stdin)["workers"]
print(" ".join("%s=%d" % (w["name"], sum(m["dispatched"] for m in w["models"])) for w in workers))'
}

counters() {  # what the hubs counted: "full" answers, retries, routing reasons
  for url in "$HUB1" "$HUB2"; do
    curl -fs -H "Authorization: Bearer $ADMIN" "$url/metrics" | python3 -c '
import sys, collections
totals = collections.Counter()
for line in sys.stdin:
    for name in ("caravan_hub_worker_full_total", "caravan_hub_retries_total", "caravan_hub_routing_decisions_total"):
        if line.startswith(name):
            key = name.replace("caravan_hub_", "").replace("_total", "")
            if "reason=" in line: key += ":" + line.split("reason=\"")[1].split("\"")[0]
            totals[key] += float(line.split()[-1])
print("hub " + sys.argv[1] + " " + " ".join("%s=%d" % item for item in sorted(totals.items())), end="; ")' "$url"
  done
}

cluster() {  # $1 policy
  local policy="$1" dir="$RUN/$1"
  mkdir -p "$dir"
  cp "$RUN/client.secret" "$RUN/worker.secret" "$dir/"
  {
    cat <<YAML
hub:
  listen: "127.0.0.1:0"
  heartbeat_interval: 1s
  routing: {policy: $policy}
  queue: {size: 256, timeout: 300s}
  auth: {client_secret_file: client.secret, worker_secret_file: worker.secret}
workers:
YAML
    local base=$(( $(shuf -i 300-500 -n 1) * 100 ))
    for index in "${!NAMES[@]}"; do
      cat <<YAML
  - name: ${NAMES[$index]}
    hubs: ["http://127.0.0.1:1"]
    listen: "127.0.0.1:0"
    llama_server: $LLAMA_SERVER_BIN
    ports: "$(( base + index * 100 ))-$(( base + index * 100 + 99 ))"
    state_dir: $dir
    credential_file: ${NAMES[$index]}.credential
    preload: true
    models:
      - {name: bench, path: $MODEL, args: ["-c", "8192", "--parallel", "2", "-t", "1"]}
YAML
    done
  } >"$dir/cluster.yaml"
  local pids=() hubs=()
  for hub in 1 2; do
    "$BIN/caravan-hub" --config "$dir/cluster.yaml" >"$dir/hub$hub.log" 2>&1 &
    pids+=($!); PIDS+=($!)
  done
  for hub in 1 2; do
    for _ in $(seq 1 100); do grep -q "caravan-hub listening on" "$dir/hub$hub.log" && break; sleep 0.1; done
    hubs+=("$(grep -o 'caravan-hub listening on .*' "$dir/hub$hub.log" | awk '{print $NF}')")
  done
  HUB1="${hubs[0]}"; HUB2="${hubs[1]}"
  for name in "${NAMES[@]}"; do
    "$BIN/caravan-hub" worker-secret --config "$dir/cluster.yaml" --name "$name" >"$dir/$name.credential"
    CARAVAN_HUB_URL="$HUB1,$HUB2" "$BIN/caravan-worker" --config "$dir/cluster.yaml" --name "$name" >"$dir/$name.log" 2>&1 &
    pids+=($!); PIDS+=($!)
  done
  TOKEN=$("$BIN/caravan-hub" token --config "$dir/cluster.yaml" --sub bench --ttl 2h)
  ADMIN=$("$BIN/caravan-hub" token --config "$dir/cluster.yaml" --sub ops --role admin --ttl 2h)
  for _ in $(seq 1 600); do  # every engine loaded (preload) and reported to both hubs
    local ready=0
    for url in "$HUB1" "$HUB2"; do
      ready=$(( ready + $(curl -fs -H "Authorization: Bearer $ADMIN" "$url/admin/workers" 2>/dev/null | python3 -c '
import json, sys
try: print(sum(m["state"] == "ready" for w in json.load(sys.stdin)["workers"] for m in w["models"]))
except Exception: print(0)') ))
    done
    (( ready == 8 )) && break
    sleep 0.2
  done
  local label
  label=$([[ "$policy" == cache_aware ]] && echo cache-aware || echo round-robin)
  local before after
  for workload in ${WORKLOADS:-W1 W2 W3 W4}; do
    before=$(dispatched)
    if [[ "$workload" == W4 ]]; then
      report W4 "$label" "$($WORKLOAD W4 --url "$HUB1" --url "$HUB2" --token "$TOKEN")"
    else
      report "$workload" "$label" "$($WORKLOAD "$workload" --url "$HUB1" --token "$TOKEN")"
    fi
    after=$(dispatched)
    echo "$workload $label requests per worker (through hub 1): before $before; after $after; $(counters)"
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
}

if [[ "${ORACLE:-1}" == 1 ]]; then
  say "oracle: four engines, each conversation on its own"
  oracle
fi
for policy in ${POLICIES:-weighted_round_robin cache_aware}; do
  say "cluster: $policy"
  cluster "$policy"
done
