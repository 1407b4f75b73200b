#!/usr/bin/env bash
# The routing-decision microbenchmark (docs/routing.md): builds the RoutingBench executable
# (Benchmarks/RoutingBench, not shipped) in release mode and times one pick + release on the
# real Registry at 8, 64 and 256 workers.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product RoutingBench >&2
"$(swift build -c release --show-bin-path)/RoutingBench" "$@"
