#!/usr/bin/env python3
"""Opens N concurrent streamed chat completions at once and reports time to first token.

Usage: sse-fanout.py URL TOKEN COUNT MODEL
Prints one line: "ok p50_ms p99_ms max_ms failed wall_s" where ok counts streams that ended
with [DONE], TTFT is measured from sending the request to the first `data: {` chunk, and
wall_s runs from the first request to the last stream's end. Each failed stream is described
on stderr (how it ended and its last bytes), so a loss can be traced.
For scripts/bench.sh (not a test).
"""
import asyncio
import re
import sys
import time
import urllib.parse

import streamed_chat

reported = 0
# HTTP/1.1 chunk markers ("\r\n<hex size>\r\n"): a chunk boundary may fall inside "[DONE]"
# (the hub writes each HTTP/2 DATA frame of a tunnel as a chunk). SSE lines end in "\n" alone,
# so removing the markers from the window leaves the events whole.
CHUNK_MARKER = re.compile(rb"\r\n[0-9a-fA-F]+\r\n")


def done(window):
    return b"[DONE]" in CHUNK_MARKER.sub(b"", window)


def report(line):
    """Describes a failed stream on stderr (the first 10: a reader of stdout only must not block)."""
    global reported
    reported += 1
    if reported <= 10:
        print(f"sse-fanout: {line}", file=sys.stderr)


async def one(host, port, request):
    try:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    except OSError as error:
        report(f"connect failed: {error}")
        return None, False
    start = time.perf_counter()
    writer.write(request)
    await writer.drain()
    first = None
    seen = b""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            seen = (seen + chunk)[-4096:]
            if first is None and b"data: {" in seen:
                first = (time.perf_counter() - start) * 1000
            if done(seen):
                break
    except (OSError, asyncio.IncompleteReadError) as error:
        report(f"read failed after {len(seen)} bytes: {error!r}")
    finally:
        writer.close()
    if not done(seen):
        report(f"stream ended without [DONE]; last bytes: {seen[-300:]!r}")
    return first, done(seen)


async def main():
    url, token, count, model = urllib.parse.urlparse(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
    request = streamed_chat.request(url, token, model)
    started = time.perf_counter()
    results = await asyncio.gather(*(one(url.hostname, url.port, request) for _ in range(count)))
    wall = time.perf_counter() - started
    ttfts = sorted(r[0] for r in results if r[0] is not None)
    ok = sum(1 for r in results if r[1])
    if not ttfts:
        print(f"{ok} nan nan nan {count - ok} {wall:.1f}")
        return
    pick = lambda q: streamed_chat.percentile(ttfts, q)
    print(f"{ok} {pick(0.5):.1f} {pick(0.99):.1f} {ttfts[-1]:.1f} {count - ok} {wall:.1f}")


asyncio.run(main())
