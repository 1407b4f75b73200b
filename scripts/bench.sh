#!/usr/bin/env bash
# Benchmarks Caravan against a direct llama-server and nginx, side by side in one run
# (docs/benchmarks.md). Not a test: CI does not run it; `--smoke` runs each step for 2 s.
#
#   scripts/bench.sh [--duration SECONDS] [--connections N] [--smoke] [--write]
#
# Measures, on the same machine and the tiny model:
#   1. non-streamed chat completions (max_tokens 1): req/s, p50/p99 latency (wrk)
#   2. streamed chat completions (max_tokens 64): req/s, p50/p99 (wrk) and time to first
#      token p50/p99 (a Python client)
#   3. the routing-decision microbenchmark (caravan-hub bench-routing)
# for: llama-server directly, nginx (keepalive upstream) in front of it, and Caravan
# (hub + worker, JWT auth on) in front of a llama-server the worker starts.
# --write replaces docs/benchmarks.md with the table.
set -euo pipefail
source "$(dirname "$0")/lib/prepare.sh"
cd "$ROOT"

DURATION=10; CONNECTIONS=16; WRITE=0
while (($#)); do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --smoke) DURATION=2; CONNECTIONS=4; shift ;;
    --write) WRITE=1; shift ;;
    *) echo "usage: $0 [--duration S] [--connections N] [--smoke] [--write]" >&2; exit 2 ;;
  esac
done

install_prerequisites
for tool in wrk nginx; do
  command -v "$tool" >/dev/null 2>&1 || { say "installing $tool"; apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$([[ $tool == nginx ]] && echo nginx-light || echo wrk)" >/dev/null; }
done
prepare_engine
prepare_model
say "building release binaries"
swift build -c release --product caravan-hub >&2
swift build -c release --product caravan-worker >&2
BIN="$(swift build -c release --show-bin-path)"

RUN="$(mktemp -d /tmp/caravan-bench.XXXXXX)"
PIDS=()
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if ((status)); then echo "logs kept in $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_http() { for _ in $(seq 1 300); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "timeout waiting for $1" >&2; return 1; }

ENGINE_ARGS=(-c 2048 --parallel 4 -t 1)
DIRECT=$(free_port); NGINX=$(free_port); HUB=$(free_port); ENGINE=$(free_port)

say "starting llama-server (direct) on $DIRECT"
"$LLAMA_SERVER_BIN" -m "$TINY_MODEL" --host 127.0.0.1 --port "$DIRECT" "${ENGINE_ARGS[@]}" > "$RUN/direct.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$DIRECT/health"

say "starting nginx on $NGINX (upstream keepalive to the same llama-server)"
mkdir -p "$RUN/nginx"
cat > "$RUN/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $RUN/nginx; proxy_temp_path $RUN/nginx; fastcgi_temp_path $RUN/nginx;
  uwsgi_temp_path $RUN/nginx; scgi_temp_path $RUN/nginx;
  upstream llama { server 127.0.0.1:$DIRECT; keepalive 32; }
  server {
    listen 127.0.0.1:$NGINX;
    location / {
      proxy_pass http://llama;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
NGINX
nginx -c "$RUN/nginx/nginx.conf" -p "$RUN/nginx" &
PIDS+=($!)
wait_http "http://127.0.0.1:$NGINX/health"

say "starting caravan-hub on $HUB and one worker"
openssl rand -hex 32 > "$RUN/client.secret"; openssl rand -hex 32 > "$RUN/worker.secret"
cat > "$RUN/cluster.yaml" <<YAML
hub:
  listen: "127.0.0.1:$HUB"
  heartbeat_interval: 1s
  auth: {client_secret_file: client.secret, worker_secret_file: worker.secret}
workers:
  - name: bench
    hubs: ["http://127.0.0.1:$HUB"]
    listen: "127.0.0.1:0"
    llama_server: $LLAMA_SERVER_BIN
    ports: "$ENGINE-$ENGINE"
    preload: true
    models:
      - {name: tiny, path: $TINY_MODEL, args: [$(printf '"%s", ' "${ENGINE_ARGS[@]}" | sed 's/, $//')]}
YAML
CARAVAN_LOG_LEVEL=warning "$BIN/caravan-hub" --config "$RUN/cluster.yaml" > "$RUN/hub.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$HUB/health"
CARAVAN_LOG_LEVEL=warning "$BIN/caravan-worker" --config "$RUN/cluster.yaml" --name bench > "$RUN/worker.log" 2>&1 &
PIDS+=($!)
TOKEN="$("$BIN/caravan-hub" token --config "$RUN/cluster.yaml" --sub bench --ttl 2h)"
for _ in $(seq 1 300); do
  curl -fs "http://127.0.0.1:$HUB/v1/chat/completions" -H "Authorization: Bearer $TOKEN" \
    -d '{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":1}' >/dev/null 2>&1 && break
  sleep 0.1
done

# wrk: one POST body per run, latency distribution on.
wrk_lua() {  # $1 = stream true/false, $2 = max_tokens
  cat > "$RUN/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"tiny","messages":[{"role":"user","content":"Say hello"}],"max_tokens":$2,"stream":$1}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
}
# Prints "req/s p50_ms p99_ms non2xx"
run_wrk() {
  local out
  out=$(wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$RUN/post.lua" "$1" 2>&1)
  echo "$out" > "$RUN/wrk-last.txt"
  python3 - "$out" <<'PY'
import re, sys
text = sys.argv[1]
def ms(label):
    m = re.search(r"^\s*%s\s+([\d.]+)(us|ms|s)\s*$" % re.escape(label), text, re.M)
    if not m: return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
sockets = re.search(r"Socket errors:.*", text)
print(f"{float(rps.group(1)) if rps else float('nan'):.0f} {ms('50%'):.2f} {ms('99%'):.2f} {int(errors.group(1)) if errors else 0}{' (' + sockets.group(0) + ')' if sockets else ''}")
PY
}
# Time to first streamed token: p50/p99 over sequential requests, in ms.
ttft() {
  python3 - "$1" "$TOKEN" "$2" <<'PY'
import http.client, json, sys, time, urllib.parse
url, token, count = urllib.parse.urlparse(sys.argv[1]), sys.argv[2], int(sys.argv[3])
body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 64, "stream": True})
samples = []
for _ in range(count):
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    start = time.perf_counter()
    conn.request("POST", url.path, body, {"Content-Type": "application/json", "Authorization": "Bearer " + token})
    response = conn.getresponse()
    while True:
        line = response.fp.readline()
        if not line or line.startswith(b"data: {") and b'"content":"' in line and b'"content":null' not in line:
            break
    samples.append((time.perf_counter() - start) * 1000)
    conn.close()  # the rest of the stream is not needed (and the raw reads above skipped chunk framing)
samples.sort()
print(f"{samples[len(samples)//2]:.2f} {samples[min(len(samples)-1, int(len(samples)*0.99))]:.2f}")
PY
}

declare -A RESULT
TARGETS=(direct nginx caravan)
url_for() { case "$1" in direct) echo "http://127.0.0.1:$DIRECT/v1/chat/completions" ;; nginx) echo "http://127.0.0.1:$NGINX/v1/chat/completions" ;; caravan) echo "http://127.0.0.1:$HUB/v1/chat/completions" ;; esac; }
TTFT_N=$(( DURATION >= 10 ? 200 : 20 ))
for target in "${TARGETS[@]}"; do
  url=$(url_for "$target")
  say "$target: non-streamed, max_tokens 1, ${CONNECTIONS} connections, ${DURATION}s"
  wrk_lua false 1; RESULT[$target,plain]=$(run_wrk "$url")
  say "$target: streamed, max_tokens 64"
  wrk_lua true 64; RESULT[$target,stream]=$(run_wrk "$url")
  say "$target: time to first token, $TTFT_N sequential streams"
  RESULT[$target,ttft]=$(ttft "$url" "$TTFT_N")
done
HUB_RSS=$(ps -o rss= -p "$(pgrep -f "caravan-hub --config $RUN" | head -1)" | awk '{printf "%.1f", $1/1024}')
WORKER_RSS=$(ps -o rss= -p "$(pgrep -f "caravan-worker --config $RUN" | head -1)" | awk '{printf "%.1f", $1/1024}')
ROUTING=$("$BIN/caravan-hub" bench-routing --iterations $(( DURATION >= 10 ? 200000 : 20000 )))

field() { echo "${RESULT[$1,$2]}" | awk -v i="$3" '{print $i}'; }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}x' if b else 'n/a')" "$1" "$2"; }
TABLE=$(
  echo "| target | plain req/s | vs direct | p50 ms | p99 ms | stream req/s | vs direct | stream p50 ms | stream p99 ms | TTFT p50 ms | TTFT p99 ms | non-2xx |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for target in "${TARGETS[@]}"; do
    echo "| $target | $(field $target plain 1) | $(ratio "$(field $target plain 1)" "$(field direct plain 1)") | $(field $target plain 2) | $(field $target plain 3) | $(field $target stream 1) | $(ratio "$(field $target stream 1)" "$(field direct stream 1)") | $(field $target stream 2) | $(field $target stream 3) | $(field $target ttft 1) | $(field $target ttft 2) | $(field $target plain 4)/$(field $target stream 4) |"
  done
)
MACHINE="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem/{print $2}') GiB, $(uname -sr)"
REPORT="$(cat <<MD
## Run of $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD)

Machine: $MACHINE. Command: \`scripts/bench.sh --duration $DURATION --connections $CONNECTIONS\`.
wrk: 2 threads, $CONNECTIONS connections, ${DURATION} s per row; the tiny model, llama-server \`${ENGINE_ARGS[*]}\`.
Caravan runs with JWT auth on (every request verifies a token) and its worker's own llama-server.

$TABLE

Caravan RSS after the run: hub $HUB_RSS MiB, worker $WORKER_RSS MiB.

Routing decision (release build):

$ROUTING
MD
)"
echo
echo "$REPORT"
if ((WRITE)); then
  python3 - "$ROOT/docs/benchmarks.md" "$REPORT" <<'PY'
import sys
path, report = sys.argv[1], sys.argv[2]
head = open(path).read().split("<!-- results -->")[0] if __import__("os").path.exists(path) else ""
open(path, "w").write(head + "<!-- results -->\n\n" + report + "\n")
PY
  say "wrote docs/benchmarks.md"
fi
