#!/usr/bin/env bash
# The routing-decision microbenchmark (docs/routing.md): builds caravan-hub in release mode
# and times one pick + release on the real Registry at 8, 64 and 256 workers.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib --product caravan-hub >&2
"$(swift build -c release --show-bin-path)/caravan-hub" bench-routing "$@"
