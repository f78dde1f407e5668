"""Serving throughput with batching on and off: 32 concurrent clients against the Ray Serve app.

    python bench/serve.py                      # the tiny model (random weights), 32 clients, 60 s per mode
    python bench/serve.py --model runs/tiny    # a trained run's best model

Deploys the serving app twice on one local Ray — batching on (`max_batch_size` 32: requests that arrive while the
engine is busy share its next call) at `/on`, and off (`max_batch_size` 1: one request per engine call) at `/off`,
each with its own engine replica — and runs closed-loop clients: each sends a greedy `/v1/completions` request,
waits for the answer, sends the next. The modes take turns in rounds (on, off, off, on, ...) so that load from
other jobs on a shared machine falls on both alike. Reports requests/s, generated tokens/s, p50/p99 latency and
errors per mode, prints them, and writes `bench/results/serve.json`. Batching on should reach at least 3x the
throughput of off, with zero errors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import requests

from selfexplore.config import TaskConfig, TinyModelConfig
from selfexplore.io import write_json
from selfexplore.models import build_tiny_model
from selfexplore.tasks import format_prompt, get_task
from serving.settings import Batching, ServeSettings

MODES = {"on": 32, "off": 1}  # max_batch_size per mode


@dataclass
class Load:
    """What the clients of one mode saw, summed over its rounds."""

    latencies: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0
    elapsed_s: float = 0.0
    load_averages: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        n = len(self.latencies)
        return {
            "requests": n,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed_s, 1),
            "requests_per_s": round(n / self.elapsed_s, 2),
            "generated_tokens_per_s": round(self.tokens / self.elapsed_s, 1),
            "latency_p50_s": round(statistics.median(self.latencies), 3) if n else None,
            "latency_p99_s": round(statistics.quantiles(self.latencies, n=100)[98], 3) if n > 1 else None,
            # The machine may be shared: the load says how much CPU the run really had.
            "load_average_1m": [round(x, 2) for x in self.load_averages],
        }


def run_clients(url: str, prompts: list[str], clients: int, duration_s: float, max_tokens: int, load: Load) -> None:
    """Closed-loop load: `clients` threads, each with one request in flight, until `duration_s` has passed."""
    lock = threading.Lock()
    deadline = time.perf_counter() + duration_s

    def client(index: int) -> None:
        session = requests.Session()
        i = index
        while time.perf_counter() < deadline:
            body = {"prompt": prompts[i % len(prompts)], "max_tokens": max_tokens, "temperature": 0}
            start = time.perf_counter()
            try:
                response = session.post(f"{url}/v1/completions", json=body, timeout=120)
                ok = response.status_code == 200
                n_tokens = response.json()["usage"]["completion_tokens"] if ok else 0
            except requests.RequestException:
                ok, n_tokens = False, 0
            with lock:
                if ok:
                    load.latencies.append(time.perf_counter() - start)
                    load.tokens += n_tokens
                else:
                    load.errors += 1
            i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    load.elapsed_s += time.perf_counter() - start  # includes the requests in flight at the deadline
    load.load_averages.append(os.getloadavg()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model dir or run dir (default: build the tiny model, random weights)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per mode, over all rounds")
    parser.add_argument("--rounds", type=int, default=4, help="turns per mode")
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens of every request (a GSM8K-length "
                        "answer)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", default="bench/results/serve.json")
    args = parser.parse_args()

    import ray
    from ray import serve

    from serving.app import build_app

    model = args.model
    if not model:
        model = str(Path(tempfile.mkdtemp(prefix="bench-serve-")) / "tiny")
        build_tiny_model(TinyModelConfig(), model)
    prompts = [format_prompt(p["question"]) for p in get_task("arith").load("test", TaskConfig())]

    # Logical CPUs beyond a small machine's real ones, so proxies, ingresses and engine replicas all get placed.
    ray.init(address="local", num_cpus=max(6, os.cpu_count() or 1), include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    urls = {}
    for mode, max_batch_size in MODES.items():
        settings = ServeSettings(model=model, batching=Batching(max_batch_size=max_batch_size))
        serve.run(build_app(settings), name=f"bench-{mode}", route_prefix=f"/{mode}")
        urls[mode] = f"http://127.0.0.1:{args.port}/{mode}"
        run_clients(urls[mode], prompts, args.clients, 5.0, args.max_tokens, Load())  # warm-up
    loads = {mode: Load() for mode in MODES}
    for r in range(args.rounds):
        for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
            run_clients(urls[mode], prompts, args.clients, args.duration / args.rounds, args.max_tokens, loads[mode])
            print(f"round {r + 1} {mode}: {json.dumps(loads[mode].summary())}", flush=True)
    serve.shutdown()
    ray.shutdown()

    results = {mode: {"max_batch_size": MODES[mode], **loads[mode].summary()} for mode in MODES}
    report = {
        "what": "closed-loop clients, greedy /v1/completions, one engine replica per mode (hf, 1 CPU thread), "
        "modes in alternating rounds",
        "model": args.model or "tiny (TinyModelConfig defaults, random weights: every answer runs to max_tokens)",
        "clients": args.clients,
        "duration_s_per_mode": args.duration,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "batch_wait_timeout_s": Batching().batch_wait_timeout_s,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        **results,
        "speedup_requests_per_s": round(results["on"]["requests_per_s"] / results["off"]["requests_per_s"], 2),
    }
    write_json(args.out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
