"""Shared by the streaming benchmarks (sse-fanout.py, token-latency.py): the raw HTTP/1.1
request of one streamed chat completion, and a percentile of sorted samples."""
import json


def request(url, token, model):
    """The bytes of a streamed chat completion POST to `url` (a urllib.parse result)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True},
                      separators=(",", ":")).encode()
    return (
        f"POST {url.path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def percentile(ordered, q):
    """The q-quantile (0..1) of an ascending list."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]
