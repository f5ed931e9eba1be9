#!/usr/bin/env python3
"""Throughput of `prima serve` at 1 and N concurrent streams.

Starts `prima serve` on MODEL with --parallel N, then times one stream alone
and N streams at once (each generating --tokens tokens, EOS ignored) and
prints tokens/s for both and their ratio. Arguments after `--` go to
`prima serve` (such as a ring: `-- --ring HOST:PORT,… --layer-window 10,10,10`).
Usage:
    scripts/serve-bench.py MODEL [--clients 8] [--tokens 64] [--threads 2] [--rounds 3] [-- SERVE ARGS]
"""

import argparse
import json
import pathlib
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parent.parent


def start(model, clients, threads, extra):
    cmd = [str(ROOT / "target/release/prima"), "serve", "-m", model, "--port", "0", "-t", str(threads),
           "--parallel", str(clients), "-c", str(clients * 512)] + extra
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if " on http://" in line:
            return proc, "http://" + line.split(" on http://")[1].split()[0]
    raise SystemExit("prima serve ended before it was ready")


def complete(url, prompt, tokens):
    body = json.dumps({"prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True}).encode()
    req = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)["usage"]["completion_tokens"]


def timed(url, n, tokens):
    counts = [0] * n
    def one(i):
        counts[i] = complete(url, f"Story {i}: once upon a time", tokens)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = sys.argv[1:]
    cut = args.index("--") if "--" in args else len(args)
    a = ap.parse_args(args[:cut])
    extra = args[cut + 1:]
    proc, url = start(a.model, a.clients, a.threads, extra)
    try:
        complete(url, "warm up", 4)
        rows = []
        for r in range(a.rounds):
            one = timed(url, 1, a.tokens)
            many = timed(url, a.clients, a.tokens)
            rows.append((one, many))
            print(f"round {r + 1}: 1 stream {one:.1f} tok/s, {a.clients} streams {many:.1f} tok/s, ratio {many / one:.2f}x")
        ratios = sorted(m / o for o, m in rows)
        print(json.dumps({"clients": a.clients, "tokens": a.tokens, "threads": a.threads,
                          "one_stream_tok_s": [round(o, 1) for o, _ in rows],
                          "concurrent_tok_s": [round(m, 1) for _, m in rows],
                          "median_ratio": round(ratios[len(ratios) // 2], 2)}))
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
