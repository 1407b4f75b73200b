#!/usr/bin/env bash
# A "static engine" for scripts/bench.sh: takes the llama-server flags the worker passes
# and runs nginx answering /health, /slots and every other path with canned bodies (a chat
# completion), so a benchmark through it measures the proxy alone. Not for production.
set -euo pipefail
PORT=""
while (($#)); do case "$1" in --port) PORT="$2"; shift 2 ;; *) shift ;; esac; done
[[ -n "$PORT" ]] || { echo "static-engine: --port is required" >&2; exit 2; }
DIR="$(mktemp -d /tmp/caravan-static.XXXXXX)"
SLOTS="$(python3 -c 'import json; print(json.dumps([{"id": i, "is_processing": False} for i in range(64)], separators=(",", ":")))')"
cat > "$DIR/nginx.conf" <<CONF
master_process off;
daemon off;
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  client_body_temp_path $DIR; proxy_temp_path $DIR; fastcgi_temp_path $DIR; uwsgi_temp_path $DIR; scgi_temp_path $DIR;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$PORT;
    default_type application/json;
    location = /health { return 200 '{"status":"ok"}'; }
    location = /slots { return 200 '$SLOTS'; }
    location / { return 200 '{"id":"static","object":"chat.completion","created":0,"model":"static","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'; }
  }
}
CONF
echo "static engine (nginx) listening on 127.0.0.1:$PORT"
exec nginx -c "$DIR/nginx.conf" -p "$DIR"
