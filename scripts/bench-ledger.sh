#!/usr/bin/env bash
# The usage ledger under sustained load (issue 32): a hub and a worker (FakeEngine), `hey`
# sending ~1,000 requests a second for DURATION seconds with a managed key, into the
# SQLite store and then into a PostgreSQL store (a server this script starts as the
# postgres user). Prints requests sent and answered, the ledger's count of them (from
# GET /admin/usage once the hub stopped with SIGTERM and started again), and the hub's
# CPU per request. Not a test.
#   scripts/bench-ledger.sh [--duration SECONDS] [--rate PER_SECOND]
set -euo pipefail
source "$(dirname "$0")/lib/prepare.sh"
cd "$ROOT"
DURATION=20; RATE=1000
while (($#)); do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    *) echo "usage: $0 [--duration S] [--rate N]" >&2; exit 2 ;;
  esac
done
command -v hey >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey >/dev/null 2>&1; }
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
prepare_model
source "$ROOT/scripts/lib/bench-common.sh"
bench_setup ledger caravan-hub caravan-worker FakeEngine
as_postgres() { if ((EUID == 0)); then runuser -u postgres -- "$@"; else "$@"; fi; }

# $1: label, $2: the hub.store line (empty: the default SQLite file in the run's state folder)
run_store() {
  local label="$1" store="$2" hub engine dir="$RUN/$1"
  mkdir -p "$dir"; cp "$RUN/client.secret" "$RUN/worker.secret" "$dir/"
  hub=$(free_port); engine=$(free_port)
  { bench_hub_yaml "$hub"; cat; } > "$dir/cluster.yaml" <<YAML
  - name: w
    hubs: ["http://127.0.0.1:$hub"]
    listen: "127.0.0.1:0"
    llama_server: $BIN/FakeEngine
    ports: "$engine-$engine"
    preload: true
    models:
      - {name: fake, path: $TINY_MODEL, env: {FAKE_TOKENS: "8", FAKE_SLOTS: "64"}}
YAML
  [[ -n "$store" ]] && sed -i "s|^hub:|hub:\n  store: \"$store\"|" "$dir/cluster.yaml"
  export XDG_STATE_HOME="$dir/state"
  "$BIN/caravan-hub" --config "$dir/cluster.yaml" --log-level warning > "$dir/hub.log" 2>&1 &
  local hub_pid=$!; PIDS+=("$hub_pid")
  wait_http "http://127.0.0.1:$hub/health"
  "$BIN/caravan-worker" --config "$dir/cluster.yaml" --name w --log-level warning > "$dir/worker.log" 2>&1 &
  PIDS+=($!)
  local key admin
  key="$("$BIN/caravan-hub" keys create --config "$dir/cluster.yaml" --name bench 2>/dev/null)"
  admin="$("$BIN/caravan-hub" token --config "$dir/cluster.yaml" --sub ops --role admin --ttl 1h)"
  wait_chat "http://127.0.0.1:$hub" "$key" fake
  local before; before=$(cpu_ticks "$hub_pid")
  hey -z "${DURATION}s" -c 16 -q $((RATE / 16)) -m POST -H "Authorization: Bearer $key" -T application/json \
    -d '{"model":"fake","messages":[{"role":"user","content":"hi"}],"max_tokens":8}' \
    "http://127.0.0.1:$hub/v1/chat/completions" > "$dir/hey.txt"
  local after; after=$(cpu_ticks "$hub_pid")
  local sent ok
  sent=$(awk '/\[[0-9]+\]/ {gsub(/[\[\]]/, "", $1); n += $2} END {print n + 0}' "$dir/hey.txt")
  ok=$(awk '/\[200\]/ {print $2}' "$dir/hey.txt")
  kill -TERM "$hub_pid"; wait "$hub_pid" 2>/dev/null || true
  "$BIN/caravan-hub" --config "$dir/cluster.yaml" --log-level warning > "$dir/hub2.log" 2>&1 &
  PIDS+=($!)
  wait_http "http://127.0.0.1:$hub/health"
  local counted
  counted=$(curl -fs "http://127.0.0.1:$hub/admin/usage?group_by=key" -H "Authorization: Bearer $admin" |
    python3 -c 'import json,sys; print(sum(l["requests"] for l in json.load(sys.stdin)["usage"] if l["key"] == "key:bench"))')
  # The first accepted request of the readiness loop is in the ledger too.
  printf '| %s | %d s at %d/s | %s | %s | %s | %s | %.1f |\n' "$label" "$DURATION" "$RATE" "$sent" "$ok" "$counted" \
    "$((counted - 1 - ok))" "$(echo "($after - $before) * 10000 / $ok" | bc -l)"
  unset XDG_STATE_HOME
}

echo "| store | load | sent | answered 200 | ledger rows | ledger - answered | hub CPU µs/request |"
echo "|---|---|---:|---:|---:|---:|---:|"
run_store sqlite ""

# Outside the run's private folder: the server runs as the postgres user.
PG_DIR="$(mktemp -d /tmp/caravan-ledger-pg.XXXXXX)"; ((EUID == 0)) && chown postgres "$PG_DIR"
PG_PORT=$(free_port)
as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U caravan --auth=trust -E UTF8 >/dev/null
as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1" -w start >/dev/null
trap 'as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$PG_DIR"; bench_cleanup' EXIT
as_postgres "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U caravan caravan
run_store postgres "postgres://caravan@127.0.0.1:$PG_PORT/caravan"
