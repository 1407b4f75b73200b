#!/usr/bin/env bash
# Where the time to first token goes when 1,000 streams open at once (issue 29): one hub and
# one worker (connect: inbound or outbound) in front of FakeEngine (a token every 50 ms), the
# fan-out client of scripts/bench.sh, and each hop's own TTFT from the JSON access lines.
# Not a test. Usage: scripts/bench-burst.sh [inbound|outbound] [STREAMS]
# Prints: the client's line (ok p50 p99 max failed wall_s), then the TTFT p50/p99 the hub
# measured (from its relay's start) and the worker measured (from its own relay's start).
set -euo pipefail
source "$(dirname "$0")/lib/prepare.sh"
cd "$ROOT"
MODE="${1:-outbound}"; STREAMS="${2:-1000}"
prepare_model
source "$ROOT/scripts/lib/bench-common.sh"
bench_setup burst caravan-hub caravan-worker FakeEngine
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
HUB=$(free_port); TUNNEL=$(free_port); ENGINE=$(free_port)
{ bench_hub_yaml "$HUB" "$TUNNEL"; cat; } > "$RUN/cluster.yaml" <<YAML
  - name: fan
    hubs: ["http://127.0.0.1:$HUB"]
    listen: "127.0.0.1:0"
    connect: $MODE
    llama_server: $BIN/FakeEngine
    ports: "$ENGINE-$ENGINE"
    preload: true
    models:
      - {name: fan, path: $TINY_MODEL, env: {FAKE_TOKEN_MS: "50", FAKE_TOKENS: "40", FAKE_SLOTS: "20000"}}
YAML
CARAVAN_LOG_FORMAT=json "$BIN/caravan-hub" --config "$RUN/cluster.yaml" > "$RUN/hub.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$HUB/health"
CARAVAN_LOG_FORMAT=json CARAVAN_LOG_LEVEL=debug "$BIN/caravan-worker" --config "$RUN/cluster.yaml" --name fan > "$RUN/worker.log" 2>&1 &
PIDS+=($!)
TOKEN="$("$BIN/caravan-hub" token --config "$RUN/cluster.yaml" --sub bench --ttl 1h)"
wait_chat "http://127.0.0.1:$HUB" "$TOKEN" fan
sleep 1
HUB_START=$(wc -l < "$RUN/hub.log"); WORKER_START=$(wc -l < "$RUN/worker.log")
say "$STREAMS streams at once, worker connect: $MODE"
python3 scripts/lib/sse-fanout.py "http://127.0.0.1:$HUB/v1/chat/completions" "$TOKEN" "$STREAMS" fan
sleep 1
python3 - "$RUN/hub.log" "$HUB_START" "$RUN/worker.log" "$WORKER_START" <<'PY'
import json, sys
def ttfts(path, start):
    values = []
    for line in open(path).readlines()[int(start):]:
        try: entry = json.loads(line)
        except ValueError: continue
        meta = entry.get("metadata") or {}
        if entry.get("logger") == "caravan.access" and "/v1/chat" in entry.get("message", "") and "ttft_ms" in meta:
            values.append(float(meta["ttft_ms"]))
    return sorted(values)
for name, path, start in (("hub", sys.argv[1], sys.argv[2]), ("worker", sys.argv[3], sys.argv[4])):
    v = ttfts(path, start)
    pick = lambda p: v[min(len(v) - 1, int(len(v) * p))] if v else float("nan")
    print(f"{name} relays {len(v)} ttft p50/p99 ms {pick(0.5):.1f} {pick(0.99):.1f}")
PY
