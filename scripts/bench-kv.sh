#!/usr/bin/env bash
# Prompt caches across a ttl unload: a conversation resumed with its cache restored against
# one resumed without (docs/benchmarks.md, "Prompt caches across stops").
#
#   scripts/bench-kv.sh                  # 1,500- and 12,000-token contexts
#   CONTEXTS="1500" scripts/bench-kv.sh  # one of them
#
# One hub, one worker, one llama-server (one slot of 16,384 tokens, -t 2) serving the
# project's random-weight 256-dim, 6-layer llama. Per context and mode: turn 1 fills the
# slot, the model idles past its ttl (2 s) and is unloaded, turn 2 resumes the conversation:
# the engine starts again (restoring the saved cache, or not) and prefills what it lacks.
# Prints one line per (context, mode): turn 1 and turn 2 latency, the engine's cache_n on
# turn 2, and the save and restore times and bytes the worker logged.
set -euo pipefail
source "$(dirname "$0")/lib/prepare.sh"
cd "$ROOT"
install_prerequisites
prepare_engine
source "$ROOT/scripts/lib/bench-common.sh"
MODEL="$STATE/models/bench-256x6-16k.gguf"
bench_model 16384 "$MODEL"
bench_setup kv caravan-hub caravan-worker

run() {  # $1 context tokens, $2 mode (restore | none)
  local tokens="$1" mode="$2" dir="$RUN/$1-$2" budget
  budget=$([[ "$mode" == restore ]] && echo 8192 || echo 0)
  mkdir -p "$dir"
  cp "$RUN/client.secret" "$RUN/worker.secret" "$dir/"
  local port; port=$(free_port)
  { bench_hub_yaml "$port"; cat <<YAML
  - name: w
    hubs: ["http://127.0.0.1:$port"]
    listen: "127.0.0.1:0"
    llama_server: $LLAMA_SERVER_BIN
    state_dir: $dir
    credential_file: w.credential
    ttl: 2s
    kv_cache_max_mb: $budget
    models:
      - {name: bench, path: $MODEL, args: ["-c", "16384", "--parallel", "1", "-t", "2"]}
YAML
  } >"$dir/cluster.yaml"
  "$BIN/caravan-hub" --config "$dir/cluster.yaml" >"$dir/hub.log" 2>&1 &
  PIDS+=($!); local hub=$!
  wait_http "http://127.0.0.1:$port/health"
  "$BIN/caravan-hub" worker-secret --config "$dir/cluster.yaml" --name w >"$dir/w.credential"
  "$BIN/caravan-worker" --config "$dir/cluster.yaml" --name w >"$dir/w.log" 2>&1 &
  PIDS+=($!); local worker=$!
  local token admin
  token=$("$BIN/caravan-hub" token --config "$dir/cluster.yaml" --sub bench --ttl 1h)
  admin=$("$BIN/caravan-hub" token --config "$dir/cluster.yaml" --sub ops --role admin --ttl 1h)
  local state
  state() { curl -fs -H "Authorization: Bearer $admin" "http://127.0.0.1:$port/admin/workers" 2>/dev/null | python3 -c '
import json, sys
try: print(json.load(sys.stdin)["workers"][0]["models"][0]["state"])
except Exception: print("none")'; }
  for _ in $(seq 1 300); do [[ "$(state)" != none ]] && break; sleep 0.1; done
  local result
  result=$(python3 - "http://127.0.0.1:$port" "$token" "$tokens" "$admin" <<'PY'
import json, sys, time, urllib.request
url, token, tokens, admin = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
# The byte-fallback vocabulary with the chat template: about 4 tokens per 3 bytes.
system = ("Notes kept for a long conversation. " * (tokens // 36 + 1))[:tokens * 3 // 4]
def chat(turns):
    messages = [{"role": "system", "content": system}]
    for turn in range(turns):
        if turn: messages.append({"role": "assistant", "content": f"noted {turn}"})
        messages.append({"role": "user", "content": f"note {turn}"})
    body = json.dumps({"model": "bench", "max_tokens": 2, "messages": messages}).encode()
    request = urllib.request.Request(url + "/v1/chat/completions", data=body, method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    start = time.perf_counter()
    answer = json.load(urllib.request.urlopen(request, timeout=600))
    return time.perf_counter() - start, answer.get("timings", {})
def state():
    request = urllib.request.Request(url + "/admin/workers", headers={"Authorization": "Bearer " + admin})
    return json.load(urllib.request.urlopen(request))["workers"][0]["models"][0]["state"]
first, t1 = chat(1)
deadline = time.time() + 60
while state() != "not-loaded" and time.time() < deadline: time.sleep(0.1)
time.sleep(0.3)
second, t2 = chat(2)
print(f"turn1_s={first:.2f} prompt_n1={t1.get('prompt_n')} turn2_s={second:.2f} cache_n2={t2.get('cache_n')} prompt_n2={t2.get('prompt_n')}")
PY
)
  local saved restored
  saved=$(grep 'prompt caches saved' "$dir/w.log" | head -1 | grep -o 'bytes=[0-9]*\|ms=[0-9.]*\|tokens=[0-9]*' | tr '\n' ' ' || true)
  restored=$(grep 'prompt caches restored' "$dir/w.log" | head -1 | grep -o 'ms=[0-9.]*' || true)
  echo "context=$tokens mode=$mode $result save:[${saved:-none}] restore:[${restored:-none}]"
  kill "$worker" "$hub" 2>/dev/null || true
  wait "$worker" "$hub" 2>/dev/null || true
}

for tokens in ${CONTEXTS:-1500 12000}; do
  for mode in restore none; do run "$tokens" "$mode"; done
done
