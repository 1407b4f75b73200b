#!/usr/bin/env bash
# Downloads of hub-managed models (issue 33): a worker fetching a SIZE MiB model from
# scripts/lib/hf-mirror.py (Hugging Face's layout: a 302, then the file) against curl
# fetching the same URL into the same folder, RUNS times each, alternating. The worker's time
# runs from `POST /admin/models` to the model being ready on the worker (the hub's header
# read, placement and the placement call included); the worker's CPU is read from /proc
# around it. Prints a table and the ratio of medians. Not a test.
# --dir puts the worker's cache and curl's copy elsewhere (e.g. /dev/shm: the transfer without
# the disk, whose writeback makes runs of either vary by 3x here).
#   scripts/bench-download.sh [--size MIB] [--runs N] [--dir FOLDER]
set -euo pipefail
source "$(dirname "$0")/lib/prepare.sh"
cd "$ROOT"
SIZE=512; RUNS=3; DIR=""
while (($#)); do
  case "$1" in
    --size) SIZE="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    *) echo "usage: $0 [--size MIB] [--runs N] [--dir FOLDER]" >&2; exit 2 ;;
  esac
done
prepare_model
source "$ROOT/scripts/lib/bench-common.sh"
bench_setup download caravan-hub caravan-worker FakeEngine
OUT="$RUN"
if [[ -n "$DIR" ]]; then OUT="$(mktemp -d "$DIR/caravan-download.XXXXXX")"; trap 'rm -rf "$OUT"; bench_cleanup' EXIT; fi

# A GGUF header (the tiny model) and SIZE MiB of random bytes: the hub reads the header, the
# worker fetches and hashes the whole file.
FILE="$RUN/hf/caravan/bench-GGUF/big.gguf"
mkdir -p "$(dirname "$FILE")"
{ cat "$TINY_MODEL"; head -c "$((SIZE << 20))" /dev/urandom; } > "$FILE"
BYTES=$(stat -c %s "$FILE")
python3 "$ROOT/scripts/lib/hf-mirror.py" "$RUN/hf" > "$RUN/mirror.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q "listening on" "$RUN/mirror.log" && break; sleep 0.1; done
MIRROR="http://$(awk '/listening on/ {print $3}' "$RUN/mirror.log")"
URL="$MIRROR/caravan/bench-GGUF/resolve/main/big.gguf"

hub=$(free_port); engine=$(free_port)
{ bench_hub_yaml "$hub"; cat; } > "$RUN/cluster.yaml" <<YAML
  - name: w
    hubs: ["http://127.0.0.1:$hub"]
    listen: "127.0.0.1:0"
    llama_server: $BIN/FakeEngine
    ports: "$engine-$engine"
    model_cache_dir: $OUT/cache
YAML
sed -i "s|^hub:|hub:\n  model_sources: {hf_endpoint: \"$MIRROR\", allow_local: true}|" "$RUN/cluster.yaml"
export XDG_STATE_HOME="$RUN/state"
"$BIN/caravan-hub" --config "$RUN/cluster.yaml" --log-level warning > "$RUN/hub.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$hub/health"
"$BIN/caravan-worker" --config "$RUN/cluster.yaml" --name w --log-level notice > "$RUN/worker.log" 2>&1 &
WORKER=$!; PIDS+=("$WORKER")
ADMIN="$("$BIN/caravan-hub" token --config "$RUN/cluster.yaml" --sub ops --role admin --ttl 1h)"
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$hub/health/ready" >/dev/null && break; sleep 0.1; done

now() { date +%s.%N; }
state() {
  curl -fs "http://127.0.0.1:$hub/admin/models" -H "Authorization: Bearer $ADMIN" |
    python3 -c 'import json,sys; m=json.load(sys.stdin)["models"]; print(m[0]["placement"][0].get("state") or "-" if m and m[0]["placement"] else "-")'
}
CURL=(); WORKER_S=(); OWN=(); CPU=()
echo "| run | curl MiB/s | worker MiB/s, add to ready | worker MiB/s, its download alone | worker CPU ms per MiB |"
echo "|---:|---:|---:|---:|---:|"
for run in $(seq 1 "$RUNS"); do
  start=$(now); curl -fsSL -o "$OUT/curl.bin" "$URL"; end=$(now); rm -f "$OUT/curl.bin"
  curl_rate=$(echo "$BYTES / 1048576 / ($end - $start)" | bc -l)
  before=$(cpu_ticks "$WORKER"); start=$(now)
  curl -fs -X POST "http://127.0.0.1:$hub/admin/models" -H "Authorization: Bearer $ADMIN" -H "Content-Type: application/json" \
    -d "{\"name\": \"big\", \"source\": \"hf://caravan/bench-GGUF/big.gguf\", \"workers\": [\"w\"]}" > /dev/null
  until [[ "$(state)" == "not-loaded" ]]; do sleep 0.05; done
  end=$(now); after=$(cpu_ticks "$WORKER")
  worker_rate=$(echo "$BYTES / 1048576 / ($end - $start)" | bc -l)
  cpu=$(echo "($after - $before) * 10 / ($BYTES / 1048576)" | bc -l)
  # The worker's own measure of the transfer (request to verified file), from its log line.
  own=$(grep "downloaded and verified" "$RUN/worker.log" | tail -1 | sed -E 's/.*mib_per_s=([0-9]+).*/\1/')
  printf '| %d | %.0f | %.0f | %s | %.2f |\n' "$run" "$curl_rate" "$worker_rate" "$own" "$cpu"
  CURL+=("$curl_rate"); WORKER_S+=("$worker_rate"); OWN+=("$own"); CPU+=("$cpu")
  curl -fs -X DELETE "http://127.0.0.1:$hub/admin/models/big" -H "Authorization: Bearer $ADMIN" > /dev/null
  # The next run downloads again: the file leaves the cache once the worker let the model go.
  for _ in $(seq 1 100); do [[ -z "$(ls "$OUT/cache/models" 2>/dev/null)" ]] && break; sleep 0.1; done
  rm -f "$OUT"/cache/blobs/*
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
printf '\n%s MiB file; medians: curl %.0f MiB/s; worker %.0f MiB/s from add to ready (%.2fx curl), %.0f MiB/s its download alone (%.2fx); worker CPU %.2f ms per MiB\n' "$SIZE" \
  "$(median "${CURL[@]}")" "$(median "${WORKER_S[@]}")" "$(echo "$(median "${WORKER_S[@]}") / $(median "${CURL[@]}")" | bc -l)" \
  "$(median "${OWN[@]}")" "$(echo "$(median "${OWN[@]}") / $(median "${CURL[@]}")" | bc -l)" "$(median "${CPU[@]}")"
