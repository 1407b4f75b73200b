#!/usr/bin/env python3
"""Measures what the path adds to each streamed token: engine write -> client read.

Usage: token-latency.py URL TOKEN MODEL STREAMS
Opens STREAMS concurrent streamed chat completions against FakeEngine (directly or through
Caravan). FakeEngine stamps each event with `sent_ns` (CLOCK_MONOTONIC when it wrote it);
this client reads the clock the moment the bytes arrive. Prints one line:
"tokens failed p50_us p99_us" over every token event of every stream (failed: streams
that did not end with [DONE]). The client's own cost is
the same direct and through Caravan: subtract the direct row to get what Caravan adds.
For scripts/bench.sh (not a test).
"""
import asyncio
import re
import sys
import time
import urllib.parse

import streamed_chat

STAMP = re.compile(rb'"sent_ns":(\d+)')


async def one(host, port, request, latencies):
    """True when the stream ended with [DONE]."""
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    writer.write(request)
    await writer.drain()
    pending = b""
    try:
        while True:
            chunk = await reader.read(65536)
            now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            if not chunk:
                break
            pending += chunk
            # Whole events only: a stamp split across reads is read when its event is complete.
            cut = pending.rfind(b"\n\n")
            if cut < 0:
                continue
            complete, pending = pending[:cut], pending[cut + 2:]
            for stamp in STAMP.findall(complete):
                latencies.append((now - int(stamp)) / 1000)
            if b"[DONE]" in complete:
                return True
    finally:
        writer.close()
    return False


async def main():
    url, token, model, streams = urllib.parse.urlparse(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    request = streamed_chat.request(url, token, model)
    latencies = []
    done = await asyncio.gather(*(one(url.hostname, url.port, request, latencies) for _ in range(streams)))
    failed = streams - sum(done)
    latencies.sort()
    if not latencies:
        print(f"0 {failed} nan nan")
        return
    pick = lambda q: streamed_chat.percentile(latencies, q)
    print(f"{len(latencies)} {failed} {pick(0.5):.0f} {pick(0.99):.0f}")


asyncio.run(main())
