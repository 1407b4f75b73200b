#!/usr/bin/env python3
"""Fuzzes a live Caravan hub with careless and hostile requests, each on its own connection.

    python3 scripts/lib/fuzz.py --url http://127.0.0.1:8080 --token "$TOKEN" --model tiny \
        --seed 7 --cases 2000

Cases come from a seeded generator (the same seed gives the same requests): random JSON
bodies, a valid chat body with wrong types, missing members and huge arrays, byte flips in
the body, the request line and the headers, odd targets (`?<=1`, `%zz`, raw UTF-8),
chunked and length-delimited bodies whose framing lies, and every routed endpoint.

Checked for every answer:
  - a request that was well framed HTTP gets an answer (nothing hangs, nothing is dropped);
  - a 5xx is only ever the engine's own answer to a request that failed the same way on
    every worker (`X-Caravan-Blame: request`) or its 501 (not supported); never a 500/502
    that blames a worker, a 503 from an open breaker, or a queue timeout;
  - every error carries the OpenAI envelope {"error":{"message","type","code"}}, and its
    message names no internal type.

Prints "fuzz: N cases, seed S, ..." first and a table of statuses; exits 1 when a check failed.
"""
import argparse
import concurrent.futures
import json
import random
import re
import socket
import sys
import time
from urllib.parse import urlparse

ROUTED = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/completion", "/tokenize",
          "/detokenize", "/apply-template", "/infill", "/v1/rerank", "/embeddings"]
ODD_TARGETS = ["?<=1", "?a=<script>", "?%zz", "?x=%", "?q=\"{|}\\^`", "?" + "a" * 3000, "/../../etc/passwd",
               "?x=\u00e9\u65e5", "#frag", "?a=1&&&==", "//", "/%2e%2e/", "?\t", "?a=[1]"]
INTERNAL = re.compile(r"HTTPParserError|NIO[A-Z]\w+|DecodingError|Swift\.|ChannelError|IOError\b|"
                      r"\bUpstreamError\b|Optional\(")


def random_scalar(rng):
    return rng.choice([
        None, True, False, 0, -1, 1, 2 ** 31, -2 ** 63, 1.5, 1e308, -0.0, "", "x", "tiny", "\u0000", "\ud7ff",
        "a" * rng.randint(1, 2000), rng.randint(-10 ** 6, 10 ** 6), rng.random() * 1e6,
    ])


def random_json(rng, depth=0):
    kind = rng.random()
    if depth > 4 or kind < 0.4:
        return random_scalar(rng)
    if kind < 0.7:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["model", "messages", "role", "content", "stream", "max_tokens", "prompt", "input", "tools", "n_predict",
            "temperature", "stop", "x"]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def valid_chat(rng, model):
    return {"model": model, "messages": [{"role": "user", "content": "Say hello %d" % rng.randint(0, 999)}],
            "max_tokens": rng.randint(1, 8), "stream": rng.random() < 0.5}


def mutated_chat(rng, model):
    body = valid_chat(rng, model)
    for _ in range(rng.randint(1, 3)):
        choice = rng.random()
        if choice < 0.25:
            key = rng.choice(list(body.keys()) or ["model"])
            body.pop(key, None)
        elif choice < 0.5:
            body[rng.choice(["model", "messages", "stream", "max_tokens", "temperature", "stop", "n", "tools",
                             "max_completion_tokens", "n_predict", "response_format", "logprobs"])] = random_json(rng)
        elif choice < 0.7 and isinstance(body.get("messages"), list) and body["messages"]:
            message = body["messages"][0]
            if isinstance(message, dict):
                key = rng.choice(["role", "content", "name", "tool_calls"])
                if rng.random() < 0.4:
                    message.pop(key, None)
                else:
                    message[key] = random_json(rng)
        elif choice < 0.8:
            size = rng.choice([1000, 5000, 20000])
            body[rng.choice(["messages", "stop", "x", "tools"])] = [random_json(rng, 4) for _ in range(size)]
        elif choice < 0.9:
            body["messages"] = [{"role": rng.choice(["user", "system", "assistant", "tool", "", "\u00e9"]),
                                 "content": rng.choice(["hi", "", None, [{"type": "text", "text": "hi"}],
                                                        [{"type": "image_url", "image_url": {"url": "x"}}],
                                                        [{"type": "nope"}], [{}]])}
                                for _ in range(rng.randint(1, 4))]
        else:
            nested = "x"
            for _ in range(rng.randint(10, 600)):
                nested = [nested]
            body["x"] = nested
    return body


def flip(rng, data):
    data = bytearray(data)
    alphabet = b"{}[]:,\"\\ 0123456789.eE+-tfnulrs/<>%\x00\x1f\x7f\xc3\xa9\xff\r\n"
    for _ in range(rng.randint(1, 4)):
        if not data:
            break
        position = rng.randrange(len(data))
        action = rng.random()
        if action < 0.33:
            del data[position]
        elif action < 0.66:
            data[position] = rng.choice(alphabet)
        else:
            data.insert(position, rng.choice(alphabet))
    return bytes(data)


def request(method, target, host, token, body, headers=None, content_length=None):
    lines = ["%s %s HTTP/1.1" % (method, target), "Host: %s" % host, "Connection: close"]
    if token:
        lines.append("Authorization: Bearer %s" % token)
    lines.append("Content-Type: application/json")
    for name, value in headers or []:
        lines.append("%s: %s" % (name, value))
    if content_length is not False:
        lines.append("Content-Length: %d" % (len(body) if content_length is None else content_length))
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass")
    return head + body


def encode(value):
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def make_case(rng, index, host, token, model):
    """One case: (kind, request bytes, well framed, shut the write side after sending)."""
    kind = rng.choice(["json", "random-json", "body-flip", "target", "request-line", "headers", "framing", "endpoint"])
    path = "/v1/chat/completions"
    if kind == "json":
        return kind, request("POST", path, host, token, encode(mutated_chat(rng, model))), True, False
    if kind == "random-json":
        value = random_json(rng)
        if isinstance(value, dict) and rng.random() < 0.6:
            value["model"] = model
        return kind, request("POST", rng.choice(ROUTED), host, token, encode(value)), True, False
    if kind == "body-flip":
        return kind, request("POST", path, host, token, flip(rng, encode(valid_chat(rng, model)))), True, False
    if kind == "target":
        target = path + rng.choice(ODD_TARGETS)
        return kind, request("POST", target, host, token, encode(valid_chat(rng, model))), True, False
    if kind == "request-line":
        data = request("POST", path + "?x=1", host, token, encode(valid_chat(rng, model)))
        line_end = data.index(b"\r\n")
        return kind, flip(rng, data[:line_end]) + data[line_end:], False, False
    if kind == "headers":
        # Flips in every header but Authorization and Content-Length (kept whole, so the case
        # is the same for the same seed whatever the token, and the body stays framed).
        body = encode(valid_chat(rng, model))
        lines = ["Host: %s" % host, "Connection: close", "Content-Type: application/json", "X-Extra: v%d" % index,
                 "Accept: */*"]
        mutable = flip(rng, "\r\n".join(lines).encode())
        fixed = ("Authorization: Bearer %s\r\nContent-Length: %d" % (token, len(body))).encode()
        data = b"POST " + path.encode() + b" HTTP/1.1\r\n" + mutable + b"\r\n" + fixed + b"\r\n\r\n" + body
        return kind, data, False, False
    if kind == "framing":
        body = encode(valid_chat(rng, model))
        choice = rng.randrange(5)
        if choice == 0:  # chunked, valid
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
            return "chunked", request("POST", path, host, token, chunks + b"0\r\n\r\n",
                                      headers=[("Transfer-Encoding", "chunked")], content_length=False), True, False
        if choice == 1:  # chunked, a lying chunk size
            return "chunked-bad", request("POST", path, host, token, b"zz\r\n" + body + b"\r\n0\r\n\r\n",
                                          headers=[("Transfer-Encoding", "chunked")], content_length=False), True, False
        if choice == 2:  # announced longer than sent, then the client stops sending
            return "short-body", request("POST", path, host, token, body, content_length=len(body) + 50), False, True
        if choice == 3:  # announced shorter: the rest reads as a (broken) next request
            return "long-body", request("POST", path, host, token, body, content_length=max(0, len(body) - 9)), True, False
        return "two-lengths", request("POST", path, host, token, body,
                                      headers=[("Content-Length", str(len(body) + 1))]), True, False
    body = valid_chat(rng, model) if rng.random() < 0.5 else mutated_chat(rng, model)
    endpoint = rng.choice(ROUTED)
    if endpoint in ("/v1/completions", "/completion", "/infill"):
        body = {"model": model, "prompt": rng.choice(["hi", "", 5, ["a", "b"], [1, 2, 3], None]), "max_tokens": 4}
    elif endpoint in ("/v1/embeddings", "/embeddings"):
        body = {"model": model, "input": rng.choice(["hi", "", ["a"], [1, 2], None, {"a": 1}])}
    elif endpoint in ("/tokenize", "/detokenize"):
        body = {"model": model, "content": "hi", "tokens": rng.choice([[1, 2], ["a"], [-1], [10 ** 9], "x"])}
    return "endpoint", request("POST", endpoint, host, token, encode(body)), True, False


def exchange(address, data, shut, timeout):
    """Sends one request and reads the whole answer: (status, headers, body) or None."""
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if shut:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the hub may answer (and close) before taking the whole request
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            if not chunks:
                raise
        except ConnectionResetError:
            pass
    raw = b"".join(chunks)
    if not raw:
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    while status == 100:  # an interim answer, then the real one
        head, _, body = body.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    if headers.get("transfer-encoding", "").lower() == "chunked":
        decoded, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            decoded, rest = decoded + rest[:size], rest[size + 2:]
        body = decoded
    elif "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return status, headers, body


def check(answer, well_framed):
    """The failed check for one answer, or None."""
    if answer is None:
        return "no answer" if well_framed else None
    status, headers, body = answer
    # 501 is the engine saying it cannot do this at all (/infill without FIM tokens): its own answer.
    if status >= 500 and status != 501 and headers.get("x-caravan-blame") != "request":
        return "a %d that is not the engine's answer to a poison request: %s" % (status, body[:300])
    if status >= 400:
        try:
            error = json.loads(body)["error"]
            assert isinstance(error["message"], str) and isinstance(error["type"], str) and "code" in error
        except Exception:
            return "a %d without the OpenAI error envelope: %r" % (status, body[:300])
        if headers.get("x-caravan-blame") != "request" and INTERNAL.search(error["message"]):
            return "a %d whose message names an internal type: %s" % (status, error["message"])
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", action="append", default=[],
                        help="a client token; several spread the cases over several clients (as many careless apps)")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for a well framed request's answer")
    args = parser.parse_args()
    url = urlparse(args.url)
    address = (url.hostname, url.port)
    host = "%s:%d" % address
    rng = random.Random(args.seed)
    tokens = args.token or [""]
    cases = [make_case(rng, index, host, tokens[index % len(tokens)], args.model) for index in range(args.cases)]
    print("fuzz: %d cases, seed %d, against %s" % (len(cases), args.seed, args.url), flush=True)

    def run(index):
        kind, data, well_framed, shut = cases[index]
        try:
            answer = exchange(address, data, shut, args.timeout if well_framed else 3)
        except socket.timeout:
            answer = "timeout"
        except OSError as error:
            return index, kind, None, None if not well_framed else "connection error: %s" % error, None
        if answer == "timeout":
            return index, kind, "hang", "no answer within %ss" % args.timeout if well_framed else None, None
        return index, kind, answer and answer[0], check(answer, well_framed), answer

    started = time.time()
    statuses, failures, kinds, by_kind, poison = {}, [], {}, {}, []
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        for index, kind, status, failure, answer in pool.map(run, range(len(cases))):
            if answer and answer[1].get("x-caravan-blame") == "request" and len(poison) < 8:
                poison.append((cases[index][1].partition(b"\r\n\r\n")[2][:160], answer[0], answer[2][:160]))
            statuses[status] = statuses.get(status, 0) + 1
            kinds[kind] = kinds.get(kind, 0) + 1
            by_kind.setdefault(kind, {})
            by_kind[kind][status] = by_kind[kind].get(status, 0) + 1
            if failure:
                failures.append((index, kind, failure))
    elapsed = time.time() - started
    print("fuzz: answers by status: " + ", ".join("%s: %d" % (key, statuses[key])
                                                  for key in sorted(statuses, key=lambda k: str(k))))
    for kind in sorted(by_kind):
        print("fuzz:   %-12s %4d cases: %s" % (kind, kinds[kind], ", ".join(
            "%s: %d" % (key, by_kind[kind][key]) for key in sorted(by_kind[kind], key=lambda k: str(k)))))
    print("fuzz: %d cases in %.1f s, %d failed checks (seed %d)" % (len(cases), elapsed, len(failures), args.seed))
    for body, status, answer in poison:
        print("fuzz: poison (failed alike on every worker, no breaker sample): %r -> %d %r" % (body, status, answer))
    for index, kind, failure in failures[:25]:
        for stream in (sys.stdout, sys.stderr):  # stderr: what a caller shows when the exit status is 1
            print("fuzz: FAILED case %d (%s): %s\n      request: %r" % (index, kind, failure, cases[index][1][:400]),
                  file=stream)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
