#!/usr/bin/env python3
"""The workloads of scripts/bench-cache.sh, against hubs or straight against engines.

    cache-workload.py W1 --url http://127.0.0.1:8080 --token T        through a hub
    cache-workload.py W1 --url http://h1 --url http://h2 --token T    W4: turns alternate between hubs
    cache-workload.py W1 --engine http://127.0.0.1:9001 ...          the oracle: conversation i
                                                                     always to engine i mod n

W1: 16 conversations x 6 turns, each with its own ~1,500-token system prompt, run side by
    side (each conversation's turns in order). Reported: turns >= 2 mean and p90 latency.
W2: 32 users at once sharing one ~1,500-token system prompt, 3 distinct questions each.
    Reported: p99 latency and throughput.
W3: 64 distinct one-shot prompts (~1,500 tokens, nothing in common), 16 at a time.
    Reported: throughput.

Every request asks for 8 tokens, so prefill dominates. Prompt reuse is the engines' own
count: sum(cache_n) / sum(cache_n + prompt_n) from each answer's `timings`.
Prints one JSON object.
"""
import argparse
import concurrent.futures
import json
import random
import threading
import time
import urllib.request

WORDS = ("alpha river stone cloud maple quartz ember tide orbit lumen cedar delta falcon harbor "
         "indigo juniper kelp lantern meadow nectar onyx prism quill raven saffron thistle umber "
         "velvet willow yarrow zephyr").split()


def text(seed, chars=1100):
    rng = random.Random(seed)
    words = []
    while sum(len(w) + 1 for w in words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words)


class Client:
    def __init__(self, urls, engines, token, model):
        self.urls, self.engines, self.token, self.model = urls, engines, token, model
        self.lock = threading.Lock()
        self.cached = self.computed = 0

    def chat(self, messages, route):
        """One request; `route` picks the hub (W4 alternation) or the engine (oracle)."""
        base = self.engines[route % len(self.engines)] if self.engines else self.urls[route % len(self.urls)]
        body = {"model": self.model, "messages": messages, "max_tokens": 8, "temperature": 0}
        request = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json",
                                                  "Authorization": "Bearer " + self.token})
        started = time.monotonic()
        with urllib.request.urlopen(request, timeout=300) as response:
            answer = json.loads(response.read())
        elapsed = time.monotonic() - started
        timings = answer.get("timings", {})
        with self.lock:
            self.cached += timings.get("cache_n", 0)
            self.computed += timings.get("prompt_n", 0)
        return elapsed, answer["choices"][0]["message"]["content"]


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(p / 100 * len(values) + 0.5)) - 1))] if values else 0


def w1(client, conversations=16, turns=6, alternate=False):
    # W4 has conversations of its own: W1's would find their prompts cached already.
    seed = 3000 if alternate else 1000

    def conversation(index):
        later = []
        messages = [{"role": "system", "content": "Conversation %d. %s" % (index, text(seed + index))}]
        for turn in range(turns):
            messages.append({"role": "user", "content": "Question %d: %s?" % (turn, text(seed * 5 + index * 10 + turn, 40))})
            # Oracle: the conversation's own engine. W4: the hubs in turn. Otherwise hub 0.
            route = index if client.engines else (turn if alternate else 0)
            elapsed, content = client.chat(messages, route)
            messages.append({"role": "assistant", "content": content})
            if turn > 0:
                later.append(elapsed)
        return later

    later, wall = timed(conversation, conversations, conversations)
    return {"turns_after_first_mean_s": sum(later) / len(later), "turns_after_first_p90_s": percentile(later, 90),
            "wall_s": wall}


def timed(job, count, workers):
    """Runs job(index) for index in range(count), `workers` at a time: (latencies, wall seconds).
    A job returns the latencies of the requests it sent."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        latencies = [latency for batch in pool.map(job, range(count)) for latency in batch]
    return latencies, time.monotonic() - started


def w2(client, users=32, questions=3):
    shared = "Shared assistant rules. " + text(42)

    def user(index):
        latencies = []
        for question in range(questions):
            messages = [{"role": "system", "content": shared},
                        {"role": "user", "content": "User %d asks %d: %s?" % (index, question, text(9000 + index * 7 + question, 60))}]
            latencies.append(client.chat(messages, index)[0])
        return latencies

    latencies, wall = timed(user, users, users)
    return {"p99_s": percentile(latencies, 99), "p50_s": percentile(latencies, 50),
            "throughput_rps": len(latencies) / wall, "wall_s": wall}


def w3(client, requests=64, concurrency=16):
    def one(index):
        return [client.chat([{"role": "user", "content": "Prompt %d. %s" % (index, text(20000 + index))}], index)[0]]

    latencies, wall = timed(one, requests, concurrency)
    return {"throughput_rps": requests / wall, "p50_s": percentile(latencies, 50), "wall_s": wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workload", choices=["W1", "W2", "W3", "W4"])
    parser.add_argument("--url", action="append", default=[])
    parser.add_argument("--engine", action="append", default=[])
    parser.add_argument("--token", default="none")
    parser.add_argument("--model", default="bench")
    args = parser.parse_args()
    client = Client(args.url, args.engine, args.token, args.model)
    if args.workload in ("W1", "W4"):
        result = w1(client, alternate=args.workload == "W4")
    elif args.workload == "W2":
        result = w2(client)
    else:
        result = w3(client)
    total = client.cached + client.computed
    result["prompt_reused"] = client.cached / total if total else 0
    result = {key: round(value, 3) if isinstance(value, float) else value for key, value in result.items()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
