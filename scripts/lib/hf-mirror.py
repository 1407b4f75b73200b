#!/usr/bin/env python3
"""A local server with Hugging Face's layout, for tests and benchmarks of model downloads.

    hf-mirror.py ROOT [--port 0] [--private ORG/REPO --token T]

Serves the files under ROOT/ORG/REPO/... the way huggingface.co does:

  GET /ORG/REPO/resolve/REV/PATH   302 to /cdn/SHA256/PATH, with X-Linked-Etag "SHA256",
                                   X-Linked-Size and ETag (an LFS file's sha256); 404 for
                                   a missing file, 401 without the token for a private repo
  GET /cdn/SHA256/PATH             the bytes, with ETag "SHA256", Accept-Ranges and Range (206)

Prints "listening on 127.0.0.1:PORT". A test steers it with POST /_control?KEY=VALUE:
  rate=BYTES       throttle every response to BYTES per second (0: no limit)
  drop_after=N     close each response's connection after N body bytes (0: never)
  corrupt=1        flip one byte in the middle of every file served (its sha256 stays advertised)
  rescan=1         hash ROOT's files again (after a test wrote new ones)
and reads GET /_stats: {"body_bytes": {PATH: bytes sent}, "requests": N, "ranges": [...]}.
"""
import argparse
import hashlib
import json
import os
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

state = {"rate": 0, "drop_after": 0, "corrupt": False}
stats = {"body_bytes": {}, "requests": 0, "ranges": []}
lock = threading.Lock()
files = {}  # relative path -> (sha256, size)
args = None


def scan():
    found = {}
    for folder, _, names in os.walk(args.root):
        for name in names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, args.root)
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            found[rel] = (digest.hexdigest(), os.path.getsize(path))
    with lock:
        files.clear()
        files.update(found)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self):
        url = urllib.parse.urlparse(self.path)
        if url.path != "/_control":
            return self.reply(404)
        q = dict(urllib.parse.parse_qsl(url.query))
        with lock:
            if "rate" in q:
                state["rate"] = int(q["rate"])
            if "drop_after" in q:
                state["drop_after"] = int(q["drop_after"])
            if "corrupt" in q:
                state["corrupt"] = q["corrupt"] == "1"
            if q.get("reset") == "1":
                stats.update(body_bytes={}, requests=0, ranges=[])
        if q.get("rescan") == "1":
            scan()
        self.reply(200, b"{}", [("Content-Type", "application/json")])

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        path = urllib.parse.unquote(url.path)
        if path == "/_stats":
            with lock:
                body = json.dumps(stats).encode()
            return self.reply(200, body, [("Content-Type", "application/json")])
        with lock:
            stats["requests"] += 1
        parts = path.strip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, rel = "/".join(parts[:2]), "/".join([parts[0], parts[1]] + parts[4:])
            if repo in (args.private or []) and self.headers.get("Authorization") != f"Bearer {args.token}":
                return self.reply(401, b'{"error":"Invalid credentials"}', [("Content-Type", "application/json")])
            entry = files.get(rel)
            if entry is None:
                return self.reply(404, b'{"error":"Entry not found"}', [("Content-Type", "application/json")])
            sha, size = entry
            return self.reply(302, b"", [("Location", f"/cdn/{sha}/{urllib.parse.quote(rel)}"), ("X-Linked-Etag", f'"{sha}"'),
                                         ("X-Linked-Size", str(size)), ("ETag", f'"{sha}"')])
        if len(parts) >= 3 and parts[0] == "cdn":
            rel = "/".join(parts[2:])
            entry = files.get(rel)
            if entry is None or entry[0] != parts[1]:
                return self.reply(404)
            return self.send_file(rel, *entry)
        return self.reply(404)

    def send_file(self, rel, sha, size):
        start, end = 0, size - 1
        status = 200
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            first, _, last = header[6:].partition("-")
            start = int(first or 0)
            end = min(int(last), size - 1) if last else size - 1
            if start >= size:
                return self.reply(416, b"", [("Content-Range", f"bytes */{size}")])
            status = 206
            with lock:
                stats["ranges"].append([rel, start, end])
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", f'"{sha}"')
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with lock:
            rate, drop_after, corrupt = state["rate"], state["drop_after"], state["corrupt"]
        middle = size // 2
        sent = 0
        began = time.monotonic()
        with open(os.path.join(args.root, rel), "rb") as f:
            f.seek(start)
            position = start
            while position <= end:
                chunk = f.read(min(64 * 1024, end - position + 1))
                if not chunk:
                    break
                if corrupt and position <= middle < position + len(chunk):
                    i = middle - position
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
                if drop_after and sent + len(chunk) > drop_after:
                    chunk = chunk[: max(0, drop_after - sent)]
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(chunk)
                position += len(chunk)
                with lock:
                    stats["body_bytes"][rel] = stats["body_bytes"].get(rel, 0) + len(chunk)
                if drop_after and sent >= drop_after:
                    self.close_connection = True
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                if rate:
                    ahead = sent / rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)


def main():
    global args
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--private", action="append")
    ap.add_argument("--token", default="")
    args = ap.parse_args()
    scan()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
