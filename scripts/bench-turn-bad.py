#!/usr/bin/env python3
"""How fast the hub stops sending traffic to a worker that turns bad (docs/routing.md).

Starts a hub and three workers weighted 1:2:4, each running the fault-injection engine
(FakeEngine), sends paced streamed requests for --healthy seconds, then turns one worker
bad (every answer a 500, or a first byte 1.5 s late with slow_ttfb 1s) and counts how many
attempts the hub sends it during the next --after seconds (the hub's own per-worker
`dispatched` counter, so retries are counted too). Breaker window --window (10s),
min_samples 3, open_for 5s.

    scripts/bench-turn-bad.py [--bin DIR] [--healthy 30] [--after 10] [--rate 8] [--window 10s]

--bin: folder with caravan-hub, caravan-worker and FakeEngine (default: this checkout's
debug build, built first). Point it at another build to compare versions. Not a test:
it prints measurements, it asserts nothing.
"""
import argparse
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, token, body=None, timeout=30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def run_case(args, bad_control, label):
    folder = tempfile.mkdtemp(prefix="caravan-turnbad-")
    processes = []
    try:
        for name in ("client.secret", "worker.secret"):
            with open(os.path.join(folder, name), "w") as f:
                f.write(secrets.token_hex(32))
        port = free_port()
        workers = [("w1", 1), ("w2", 2), ("w4", 4)]
        lines = [
            "hub:",
            f'  listen: "127.0.0.1:{port}"',
            "  heartbeat_interval: 500ms",
            "  retries: 2",
            f"  breaker: {{window: {args.window}, min_samples: 3, slow_ttfb: 1s, open_for: 5s}}",
            "  auth: {client_secret_file: client.secret, worker_secret_file: worker.secret}",
            "workers:",
        ]
        for index, (name, weight) in enumerate(workers):
            base = 40000 + index * 100 + (os.getpid() % 50) * 300
            control = os.path.join(folder, f"{name}.json")
            lines += [
                f"  - name: {name}",
                f'    hubs: ["http://127.0.0.1:{port}"]',
                '    listen: "127.0.0.1:0"',
                f"    llama_server: {os.path.join(args.bin, 'FakeEngine')}",
                f'    ports: "{base}-{base + 99}"',
                f"    weight: {weight}",
                "    preload: true",
                f"    state_dir: {folder}",
                "    models:",
                f'      - {{name: m, path: /models/m.gguf, env: {{FAKE_NAME: {name}, FAKE_CONTROL: "{control}", '
                f'FAKE_TOKEN_MS: "5", FAKE_TOKENS: "5", FAKE_SLOTS: "16"}}}}',
            ]
        config = os.path.join(folder, "cluster.yaml")
        with open(config, "w") as f:
            f.write("\n".join(lines) + "\n")
        log = open(os.path.join(folder, "hub.log"), "w")
        processes.append(subprocess.Popen([os.path.join(args.bin, "caravan-hub"), "--config", config],
                                          stdout=log, stderr=subprocess.STDOUT))
        time.sleep(1)
        for name, _ in workers:
            processes.append(subprocess.Popen(
                [os.path.join(args.bin, "caravan-worker"), "--config", config, "--name", name],
                stdout=open(os.path.join(folder, f"{name}.log"), "w"), stderr=subprocess.STDOUT))
        token = subprocess.check_output([os.path.join(args.bin, "caravan-hub"), "token", "--config", config,
                                         "--sub", "bench", "--ttl", "1h"], text=True).strip()
        admin = subprocess.check_output([os.path.join(args.bin, "caravan-hub"), "token", "--config", config,
                                         "--sub", "ops", "--ttl", "1h", "--role", "admin"], text=True).strip()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                status, body = request(port, "GET", "/health/ready", token)
                if json.loads(body).get("live_workers") == 3:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("cluster did not become ready")

        def dispatched():
            _, body = request(port, "GET", "/admin/workers", admin)
            counts, breakers = {}, {}
            for worker in json.loads(body)["workers"]:
                for model in worker["models"]:
                    counts[worker["name"]] = model["dispatched"]
                    breakers[worker["name"]] = model["breaker"]
            return counts, breakers

        stop = threading.Event()
        outcomes = []
        lock = threading.Lock()
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5,
                           "stream": True}, separators=(",", ":"))  # FakeEngine matches "stream":true

        def client():
            interval = args.clients / args.rate
            while not stop.is_set():
                started = time.time()
                try:
                    status, answer = request(port, "POST", "/v1/chat/completions", token, body)
                except OSError as error:
                    status, answer = 0, str(error).encode()
                if status != 200 and args.trace:
                    print("   failed:", status, answer[:200])
                with lock:
                    outcomes.append((started, time.time() - started, status))
                time.sleep(max(0, interval - (time.time() - started)))

        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        time.sleep(args.healthy)
        before, _ = dispatched()
        with open(os.path.join(folder, f"{args.bad}.json"), "w") as f:
            f.write(json.dumps(bad_control))
        turned = time.time()
        trace = []
        while time.time() < turned + args.after:
            time.sleep(0.5)
            _, snapshot = request(port, "GET", "/admin/workers", admin)
            views = {w["name"]: w["models"][0] for w in json.loads(snapshot)["workers"]}
            trace.append((round(time.time() - turned, 1), views[args.bad]["dispatched"] - before[args.bad],
                          {name: v.get("ttft_ms") for name, v in views.items()}, views[args.bad]["breaker"]))
        after, breakers = dispatched()
        if args.trace:
            for row in trace:
                print("  ", row)
        stop.set()
        for thread in threads:
            thread.join()
        delta = {name: after[name] - before[name] for name in after}
        total = sum(delta.values())
        window = [o for o in outcomes if o[0] >= turned and o[0] < turned + args.after]
        latencies = sorted(o[1] for o in window)
        p50 = latencies[len(latencies) // 2] if latencies else 0
        failed = sum(1 for o in window if o[2] != 200)
        weight_share = dict(workers)[args.bad] / sum(w for _, w in workers)
        print(f"{label}: {args.bad} got {delta[args.bad]} of {total} attempts in the {args.after:g} s after turning bad "
              f"({100 * delta[args.bad] / max(total, 1):.0f} %; its weight share is {100 * weight_share:.0f} %); "
              f"breaker {breakers[args.bad]}; client requests {len(window)}, failed {failed}, p50 {1000 * p50:.0f} ms")
        sys.stdout.flush()
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(folder, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", help="folder with caravan-hub, caravan-worker, FakeEngine")
    parser.add_argument("--healthy", type=float, default=30)
    parser.add_argument("--after", type=float, default=10)
    parser.add_argument("--rate", type=float, default=8, help="requests per second, all clients together")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--bad", default="w1", help="the worker that turns bad (w1, w2 or w4)")
    parser.add_argument("--trace", action="store_true", help="print the bad worker's attempts every 0.5 s")
    parser.add_argument("--window", default="10s", help="the breaker's window (the default config's is 30s)")
    args = parser.parse_args()
    if not args.bin:
        subprocess.check_call(["swift", "build", "--product", "caravan-hub"], cwd=ROOT, stdout=sys.stderr)
        subprocess.check_call(["swift", "build", "--product", "caravan-worker"], cwd=ROOT, stdout=sys.stderr)
        subprocess.check_call(["swift", "build", "--product", "FakeEngine"], cwd=ROOT, stdout=sys.stderr)
        args.bin = subprocess.check_output(["swift", "build", "--show-bin-path"], cwd=ROOT, text=True).strip()
    run_case(args, {"status": 500}, "every answer 500")
    run_case(args, {"ttfb_ms": 1500}, "first byte 1.5 s late (slow_ttfb 1s)")


if __name__ == "__main__":
    main()
