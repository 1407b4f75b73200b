#!/usr/bin/env python3
"""Counts the system calls each process makes per request (docs/benchmarks.md).

    syscalls.py URL TOKEN MODEL REQUESTS CONNECTIONS NAME=PID [NAME=PID ...]

Attaches `strace -c -f` to every thread of each PID, sends REQUESTS non-streamed chat
completions (max_tokens 1) over CONNECTIONS keep-alive connections, detaches, and prints
one line per process: `NAME calls_per_request top1:n top2:n ...` (the five largest, per
request). Needs root or ptrace rights; strace slows the processes, so only counts are read.
"""
import http.client, json, os, re, signal, subprocess, sys, tempfile, threading, time, urllib.parse

url, token, model, total, connections = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
targets = [arg.split("=", 1) for arg in sys.argv[6:]]
parsed = urllib.parse.urlparse(url)
body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 1})
headers = {"Content-Type": "application/json", "Authorization": "Bearer " + token}

tracers = []
for name, pid in targets:
    tasks = ",".join(os.listdir(f"/proc/{pid}/task"))
    out = tempfile.NamedTemporaryFile(prefix=f"strace-{name}-", suffix=".txt", delete=False).name
    tracers.append((name, out, subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", tasks],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
time.sleep(1.0)  # attached

failures = 0
lock = threading.Lock()
def client(count):
    global failures
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    for _ in range(count):
        try:
            conn.request("POST", parsed.path, body, headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                with lock: failures += 1
        except Exception:
            with lock: failures += 1
            conn.close()
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    conn.close()

share = [total // connections + (1 if i < total % connections else 0) for i in range(connections)]
threads = [threading.Thread(target=client, args=(n,)) for n in share]
for t in threads: t.start()
for t in threads: t.join()
time.sleep(0.5)
for _, _, tracer in tracers:
    tracer.send_signal(signal.SIGINT)
for name, out, tracer in tracers:
    tracer.wait(timeout=30)
    counts = {}
    for line in open(out):
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(fields) >= 5 and re.match(r"^[\d.]+$", fields[0]) and fields[-1] not in ("total",):
            calls = int(fields[3])
            counts[fields[-1]] = counts.get(fields[-1], 0) + calls
    os.unlink(out)
    per = sum(counts.values()) / total
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:5]
    print(f"{name} {per:.1f} " + " ".join(f"{call}:{n / total:.2f}" for call, n in top) + (f" failed:{failures}" if failures else ""))
