#!/usr/bin/env bash
# Checks the systemd units in deploy/systemd with `systemd-analyze verify`, as installed:
# the binaries they name are substituted with this build's, and the caravan user with root
# when it does not exist here (both are what the units' install notes create).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${1:-$ROOT/.build/debug}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
user=caravan; id caravan >/dev/null 2>&1 || user=root
for unit in "$ROOT"/deploy/systemd/*.service; do
  sed -e "s|/usr/local/bin/caravan-hub|$BIN/caravan-hub|; s|/usr/local/bin/caravan-worker|$BIN/caravan-worker|" \
      -e "s|^User=caravan|User=$user|; s|^Group=caravan|Group=$user|" "$unit" > "$work/$(basename "$unit")"
done
cp "$work/caravan-worker@.service" "$work/caravan-worker@gpu-a.service"
out="$(cd "$work" && SYSTEMD_LOG_LEVEL=warning systemd-analyze verify caravan-hub.service caravan-worker@gpu-a.service 2>&1 || true)"
# Complaints about the machine's own units are not ours.
ours="$(printf '%s\n' "$out" | grep -E 'caravan-' || true)"
if [[ -n "$ours" ]]; then
  printf '%s\n' "$ours" >&2
  echo "systemd units: FAILED" >&2
  exit 1
fi
echo "systemd units: ok (systemd-analyze verify)"
