#!/usr/bin/env bash
# Benchmarks Caravan against a direct llama-server and nginx, side by side in one run
# (docs/benchmarks.md). Not a test: CI does not run it; `--smoke` runs each step for 2 s.
#
#   scripts/bench.sh [--duration SECONDS] [--connections N] [--fanout "100 1000"] [--burst] [--smoke] [--write]
#   CARAVAN_BENCH_BIN=DIR scripts/bench.sh ...   # caravan-hub and caravan-worker from another build
#
# Measures, on the same machine and the tiny model:
#   1. non-streamed chat completions (max_tokens 1): req/s, p50/p99 latency (wrk)
#   2. streamed chat completions (max_tokens 64): req/s, p50/p99 (wrk) and time to first
#      token p50/p99 (a Python client)
#   3. a static upstream (nginx answering a canned chat completion, run by the worker as
#      its "engine" through scripts/lib/static-engine.sh): the pure proxy cost, directly,
#      through nginx and through Caravan
#   4. many concurrent SSE streams (FakeEngine emitting a token every 50 ms, 40 tokens):
#      100, 1,000 and 10,000 streams opened at once, directly and through Caravan; TTFT
#      p50/p99, hub and worker RSS while the streams are open, their CPU seconds
#   5. the routing-decision microbenchmark (the RoutingBench executable)
#   6. with --burst: where a 1,000-stream burst's TTFT goes, per hop, over both transports
#      (scripts/bench-burst.sh inbound and outbound, each on a cluster of its own)
# for 1-2: llama-server directly, nginx (keepalive upstream) in front of it, and Caravan
# (hub + worker, JWT auth on) in front of a llama-server the worker starts.
# --write replaces docs/benchmarks.md with the table.
set -euo pipefail
source "$(dirname "$0")/lib/prepare.sh"
cd "$ROOT"

DURATION=10; CONNECTIONS=16; WRITE=0; FANOUT="100 1000 10000"; BURST=0
while (($#)); do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --smoke) DURATION=2; CONNECTIONS=4; FANOUT="20"; shift ;;
    --fanout) FANOUT="$2"; shift 2 ;;
    --write) WRITE=1; shift ;;
    --burst) BURST=1; shift ;;
    *) echo "usage: $0 [--duration S] [--connections N] [--fanout \"100 1000\"] [--burst] [--smoke] [--write]" >&2; exit 2 ;;
  esac
done

install_prerequisites
for tool in wrk nginx strace; do
  command -v "$tool" >/dev/null 2>&1 || { say "installing $tool"; apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$([[ $tool == nginx ]] && echo nginx-light || echo "$tool")" >/dev/null; }
done
prepare_engine
prepare_model
source "$ROOT/scripts/lib/bench-common.sh"
bench_setup bench caravan-hub caravan-worker FakeEngine RoutingBench
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

ENGINE_ARGS=(-c 2048 --parallel 4 -t 1)
DIRECT=$(free_port); NGINX=$(free_port); HUB=$(free_port); ENGINE=$(free_port)
STATIC=$(free_port); NGINX_STATIC=$(free_port); FAN_DIRECT=$(free_port)
ENGINE_STATIC=$(free_port); ENGINE_STATIC_H2=$(free_port); ENGINE_FAN=$(free_port); ENGINE_FAN_H2=$(free_port); TUNNEL=$(free_port)
FAKE_ENV=(FAKE_TOKEN_MS=50 FAKE_TOKENS=40 FAKE_SLOTS=20000)

say "starting llama-server (direct) on $DIRECT"
"$LLAMA_SERVER_BIN" -m "$TINY_MODEL" --host 127.0.0.1 --port "$DIRECT" "${ENGINE_ARGS[@]}" > "$RUN/direct.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$DIRECT/health"

say "starting the static engine on $STATIC and the fake streaming engine on $FAN_DIRECT"
scripts/lib/static-engine.sh --port "$STATIC" > "$RUN/static.log" 2>&1 &
PIDS+=($!)
env "${FAKE_ENV[@]}" "$BIN/FakeEngine" --host 127.0.0.1 --port "$FAN_DIRECT" --alias fan > "$RUN/fan-direct.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$STATIC/health"
wait_http "http://127.0.0.1:$FAN_DIRECT/health"

say "starting nginx on $NGINX (upstream keepalive to the same llama-server) and $NGINX_STATIC (to the static engine)"
mkdir -p "$RUN/nginx"
cat > "$RUN/nginx/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $RUN/nginx; proxy_temp_path $RUN/nginx; fastcgi_temp_path $RUN/nginx;
  uwsgi_temp_path $RUN/nginx; scgi_temp_path $RUN/nginx;
  upstream llama { server 127.0.0.1:$DIRECT; keepalive 32; }
  upstream static { server 127.0.0.1:$STATIC; keepalive 32; }
  server {
    listen 127.0.0.1:$NGINX_STATIC;
    location / {
      proxy_pass http://static;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
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
{ bench_hub_yaml "$HUB" "$TUNNEL"; cat; } > "$RUN/cluster.yaml" <<YAML
  - name: bench
    hubs: ["http://127.0.0.1:$HUB"]
    listen: "127.0.0.1:0"
    llama_server: $LLAMA_SERVER_BIN
    ports: "$ENGINE-$ENGINE"
    preload: true
    models:
      - {name: tiny, path: $TINY_MODEL, args: [$(printf '"%s", ' "${ENGINE_ARGS[@]}" | sed 's/, $//')]}
  - name: static
    hubs: ["http://127.0.0.1:$HUB"]
    listen: "127.0.0.1:0"
    llama_server: $ROOT/scripts/lib/static-engine.sh
    ports: "$ENGINE_STATIC-$ENGINE_STATIC"
    preload: true
    engine_log_level: debug
    models:
      - {name: static, path: $TINY_MODEL}
  - name: static-h2
    hubs: ["http://127.0.0.1:$HUB"]
    listen: "127.0.0.1:0"
    connect: outbound
    llama_server: $ROOT/scripts/lib/static-engine.sh
    ports: "$ENGINE_STATIC_H2-$ENGINE_STATIC_H2"
    preload: true
    engine_log_level: debug
    models:
      - {name: static-h2, path: $TINY_MODEL}
  - name: fanout
    hubs: ["http://127.0.0.1:$HUB"]
    listen: "127.0.0.1:0"
    llama_server: $BIN/FakeEngine
    ports: "$ENGINE_FAN-$ENGINE_FAN"
    preload: true
    models:
      - {name: fan, path: $TINY_MODEL, env: {$(printf '%s, ' "${FAKE_ENV[@]}" | sed 's/=/: /g; s/, $//')}}
  - name: fanout-h2
    hubs: ["http://127.0.0.1:$HUB"]
    listen: "127.0.0.1:0"
    connect: outbound
    llama_server: $BIN/FakeEngine
    ports: "$ENGINE_FAN_H2-$ENGINE_FAN_H2"
    preload: true
    models:
      - {name: fan-h2, path: $TINY_MODEL, env: {$(printf '%s, ' "${FAKE_ENV[@]}" | sed 's/=/: /g; s/, $//')}}
YAML
CARAVAN_LOG_LEVEL=warning "$BIN/caravan-hub" --config "$RUN/cluster.yaml" > "$RUN/hub.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$HUB/health"
for worker in bench static static-h2 fanout fanout-h2; do
  CARAVAN_LOG_LEVEL=warning "$BIN/caravan-worker" --config "$RUN/cluster.yaml" --name "$worker" > "$RUN/worker-$worker.log" 2>&1 &
  PIDS+=($!)
done
TOKEN="$("$BIN/caravan-hub" token --config "$RUN/cluster.yaml" --sub bench --ttl 2h)"
for model in tiny static static-h2 fan fan-h2; do
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$HUB/v1/chat/completions" -H "Authorization: Bearer $TOKEN" \
      -d '{"model":"'$model'","messages":[{"role":"user","content":"hi"}],"max_tokens":1}' >/dev/null 2>&1 && break
    sleep 0.1
  done
done

HUB_PID=$(pgrep -f "caravan-hub --config $RUN" | head -1)
WORKER_PID=$(pgrep -f "caravan-worker --config $RUN/cluster.yaml --name bench" | head -1)
FAN_WORKER_PID=$(pgrep -f "caravan-worker --config $RUN/cluster.yaml --name fanout$" | head -1)
FAN_H2_WORKER_PID=$(pgrep -f "caravan-worker --config $RUN/cluster.yaml --name fanout-h2" | head -1)
sleep 2
HUB_IDLE_RSS=$(rss "$HUB_PID"); WORKER_IDLE_RSS=$(rss "$WORKER_PID")

# wrk: one POST body per run, latency distribution on.
wrk_lua() {  # $1 = stream true/false, $2 = max_tokens, $3 = model (default tiny)
  cat > "$RUN/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"${3:-tiny}","messages":[{"role":"user","content":"Say hello"}],"max_tokens":$2,"stream":$1}'
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
HUB_RSS=$(rss "$HUB_PID"); WORKER_RSS=$(rss "$WORKER_PID")

# 2b. System calls per request and process (strace -c on every thread; it slows them, so
#     only the counts are read): 2,000 non-streamed requests over 16 connections, through
#     nginx and through Caravan, to a llama-server each.
SYSCALL_ROWS=""
if [[ $EUID -eq 0 ]]; then
  NGINX_WORKER_PID=$(pgrep -f "nginx: worker process" | head -1)
  DIRECT_PID=$(pgrep -f -- "--port $DIRECT" | head -1)
  ENGINE_PID=$(pgrep -f -- "--port $ENGINE" | head -1)
  for target in nginx caravan; do
    say "system calls per request, $target"
    if [[ $target == nginx ]]; then procs=("nginx=$NGINX_WORKER_PID" "llama-server=$DIRECT_PID")
    else procs=("caravan-hub=$HUB_PID" "caravan-worker=$WORKER_PID" "llama-server=$ENGINE_PID"); fi
    while read -r name per top; do
      SYSCALL_ROWS+="| $target | $name | $per | ${top//:/ } |"$'\n'
    done < <(python3 scripts/lib/syscalls.py "$(url_for "$target")" "$TOKEN" tiny 2000 16 "${procs[@]}")
  done
fi

# 3. Static upstream: the proxy alone, with the hub reaching the worker over pooled HTTP/1.1
#    (caravan) and through the worker's tunnel (caravan-h2: connect: outbound).
declare -A STATIC_RESULT
for target in direct nginx caravan caravan-h2; do
  wrk_lua false 1 static
  case "$target" in
    direct) url="http://127.0.0.1:$STATIC/v1/chat/completions" ;;
    nginx) url="http://127.0.0.1:$NGINX_STATIC/v1/chat/completions" ;;
    caravan) url="http://127.0.0.1:$HUB/v1/chat/completions" ;;
    caravan-h2) url="http://127.0.0.1:$HUB/v1/chat/completions"; wrk_lua false 1 static-h2 ;;
  esac
  say "static upstream, $target: ${CONNECTIONS} connections, ${DURATION}s"
  STATIC_RESULT[$target]=$(run_wrk "$url")
done

# 4. What the path adds to each streamed token (engine write -> client read), 16 streams at once;
#    before the fan-out, whose overload can open breakers.
TOKEN_ROWS=""
declare -A TOKEN_P50 TOKEN_P99
for target in direct caravan; do
  url="http://127.0.0.1:$([[ $target == direct ]] && echo "$FAN_DIRECT" || echo "$HUB")/v1/chat/completions"
  say "added latency per streamed token, $target"
  read -r tokens failed p50 p99 < <(python3 scripts/lib/token-latency.py "$url" "$TOKEN" fan 16)
  TOKEN_P50[$target]=$p50; TOKEN_P99[$target]=$p99
  TOKEN_ROWS+="| $target | $tokens | $failed | $p50 | $p99 |"$'\n'
done
TOKEN_ROWS+="| Caravan adds (hub + worker) | | | $(( ${TOKEN_P50[caravan]:-0} - ${TOKEN_P50[direct]:-0} )) | $(( ${TOKEN_P99[caravan]:-0} - ${TOKEN_P99[direct]:-0} )) |"$'\n'
# 5. Many concurrent streams, opened at once: direct, then through the hub to a worker over
#    pooled HTTP/1.1 (one connection per stream), then to a worker behind a tunnel (one
#    HTTP/2 connection, a stream per request). The same FakeEngine settings everywhere.
FAN_ROWS=""
for count in $FANOUT; do
  for target in direct caravan caravan-h2; do
    case $target in
      direct) url="http://127.0.0.1:$FAN_DIRECT/v1/chat/completions"; model=fan; worker_pid=$FAN_WORKER_PID ;;
      caravan) url="http://127.0.0.1:$HUB/v1/chat/completions"; model=fan; worker_pid=$FAN_WORKER_PID ;;
      caravan-h2) url="http://127.0.0.1:$HUB/v1/chat/completions"; model=fan-h2; worker_pid=$FAN_H2_WORKER_PID ;;
    esac
    say "$count concurrent streams, $target"
    hub0=$(cpu_ticks "$HUB_PID"); worker0=$(cpu_ticks "$worker_pid")
    python3 scripts/lib/sse-fanout.py "$url" "$TOKEN" "$count" "$model" > "$RUN/fan.out" 2>"$RUN/fan.err" &
    client=$!
    peak_hub=0; peak_worker=0; peak_hub_fds=0; peak_worker_fds=0
    while kill -0 "$client" 2>/dev/null; do
      h=$(rss "$HUB_PID"); w=$(rss "$worker_pid"); hf=$(fds "$HUB_PID"); wf=$(fds "$worker_pid")
      peak_hub=$(python3 -c "print(max($peak_hub, $h))"); peak_worker=$(python3 -c "print(max($peak_worker, $w))")
      peak_hub_fds=$(( hf > peak_hub_fds ? hf : peak_hub_fds )); peak_worker_fds=$(( wf > peak_worker_fds ? wf : peak_worker_fds ))
      sleep 0.2
    done
    wait "$client" || true
    read -r ok p50 p99 max failed seconds < "$RUN/fan.out" || { ok=0; p50=nan; p99=nan; max=nan; failed=$count; seconds=nan; }
    hub_cpu=$(python3 -c "print(f'{($(cpu_ticks "$HUB_PID") - $hub0) / $(getconf CLK_TCK):.1f}')")
    worker_cpu=$(python3 -c "print(f'{($(cpu_ticks "$worker_pid") - $worker0) / $(getconf CLK_TCK):.1f}')")
    case $target in
      direct) FAN_ROWS+="| $count | direct (fake engine) | $ok | $failed | ${seconds:-} | $p50 | $p99 | $max | | | | | | |"$'\n' ;;
      caravan) FAN_ROWS+="| $count | hub -> worker, HTTP/1.1 pooled | $ok | $failed | ${seconds:-} | $p50 | $p99 | $max | $peak_hub | $peak_worker | $peak_hub_fds | $peak_worker_fds | $hub_cpu | $worker_cpu |"$'\n' ;;
      caravan-h2) FAN_ROWS+="| $count | hub -> worker, HTTP/2 tunnel | $ok | $failed | ${seconds:-} | $p50 | $p99 | $max | $peak_hub | $peak_worker | $peak_hub_fds | $peak_worker_fds | $hub_cpu | $worker_cpu |"$'\n' ;;
    esac
  done
done
ROUTING=$("$BIN/RoutingBench" --iterations $(( DURATION >= 10 ? 200000 : 20000 )))

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

Caravan RSS after these rows: hub $HUB_RSS MiB, worker $WORKER_RSS MiB.

System calls per request and process (\`scripts/lib/syscalls.py\`: \`strace -c -f\` on every
thread while 2,000 non-streamed requests, max_tokens 1, go over 16 connections; the five
largest per request):

| path | process | syscalls per request | largest (per request) |
|---|---|---:|---|
$SYSCALL_ROWS
Static upstream (nginx \`return 200\` with a canned chat completion; for Caravan the worker
runs it as its engine through \`scripts/lib/static-engine.sh\`; caravan-h2: the hub reaches that
worker through its tunnel, \`connect: outbound\`), non-streamed, $CONNECTIONS connections:

| target | req/s | vs direct | vs nginx | p50 ms | p99 ms | non-2xx |
|---|---:|---:|---:|---:|---:|---:|
$(for target in direct nginx caravan caravan-h2; do
  r=${STATIC_RESULT[$target]}
  echo "| $target | $(echo "$r" | awk '{print $1}') | $(ratio "$(echo "$r" | awk '{print $1}')" "$(echo "${STATIC_RESULT[direct]}" | awk '{print $1}')") | $(ratio "$(echo "$r" | awk '{print $1}')" "$(echo "${STATIC_RESULT[nginx]}" | awk '{print $1}')") | $(echo "$r" | awk '{print $2}') | $(echo "$r" | awk '{print $3}') | $(echo "$r" | awk '{print $4}') |"
done)

Concurrent SSE streams opened at once (\`scripts/lib/sse-fanout.py\`; FakeEngine: a token
every 50 ms, 40 tokens; TTFT from sending the request to the first \`data:\` event; wall s
from the first request to the last stream's end; RSS and open file descriptors are peaks
sampled every 0.2 s while the streams run; CPU is seconds used during the row). The hub
reaches the worker either over pooled HTTP/1.1 (a connection per stream) or through the
worker's tunnel (\`connect: outbound\`: one HTTP/2 connection, a stream per request):

| streams | path | completed | failed | wall s | TTFT p50 ms | TTFT p99 ms | TTFT max ms | hub RSS MiB | worker RSS MiB | hub fds | worker fds | hub CPU s | worker CPU s |
|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|
$FAN_ROWS
Idle RSS (after start-up and one request per model, before any load): hub $HUB_IDLE_RSS MiB, worker $WORKER_IDLE_RSS MiB.

Added latency of one streamed token (\`scripts/lib/token-latency.py\`: 16 streams at once from
FakeEngine, which stamps each event with the monotonic time it wrote it; the client reads
the same clock when the bytes arrive; µs over every token of every stream):

| path | tokens | failed streams | p50 µs | p99 µs |
|---|---:|---:|---:|---:|
$TOKEN_ROWS

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

# 6. The burst, per stage (after this run's cluster is gone: each transport on its own).
if ((BURST)); then
  bench_cleanup_now() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }
  bench_cleanup_now
  for mode in inbound outbound; do
    say "1,000-stream burst, per stage, worker connect: $mode"
    CARAVAN_BENCH_NO_BUILD=1 "$ROOT/scripts/bench-burst.sh" "$mode" 1000
  done
fi
