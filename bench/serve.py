"""Serving throughput with batching on and off: 32 concurrent clients against the Ray Serve app.

    python bench/serve.py                                   # hf engine, tiny model (random weights), 60 s per mode
    python bench/serve.py --backend vllm --stream           # vLLM's async engine, streamed requests (TTFT)
    python bench/serve.py --model runs/tiny                 # a trained run's best model

Deploys the serving app twice on one local Ray, each with its own engine replica: batching on at `/on` and off
at `/off`. With `hf`, on is `max_batch_size` 32 (requests that arrive while the engine is busy share its next
call) and off is `max_batch_size` 1 (one request per engine call). With `vllm`, on is `max_num_seqs` 32 (requests
join the running batch at the next engine step) and off is `max_num_seqs` 1 (the engine decodes one sequence at
a time; the others wait in its queue). Off keeps the same 32 clients, so both modes see the same offered load and
the same HTTP front end: only the engine's batching differs.

Closed-loop clients: each sends a greedy `/v1/completions` request, waits for the answer, sends the next. The
modes take turns in rounds (on, off, off, on, ...) so that load from other jobs on a shared machine falls on both
alike. Reports requests/s, generated tokens/s, p50/p99 latency, errors and the 1-minute load average after each
round; with `--stream` the requests are streamed and the time to first token (TTFT: to the first chunk with
text) is reported too. Writes `bench/results/serve.json` (hf) or `bench/results/serve-vllm.json` (vllm). Batching
on should reach at least 3x the throughput of off, with zero errors.
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

from selfexplore.config import EngineConfig, TaskConfig, TinyModelConfig, VLLMConfig
from selfexplore.io import write_json
from selfexplore.models import build_tiny_model
from selfexplore.tasks import format_prompt, get_task
from serving.settings import Batching, ServeSettings

BATCH_SIZES = {"on": 32, "off": 1}
"""Most requests the engine runs at once, per mode: `hf` `batching.max_batch_size`, `vllm` `max_num_seqs`."""


@dataclass
class Load:
    """What the clients of one mode saw, summed over its rounds."""

    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
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
            **percentiles("latency", self.latencies),
            **percentiles("ttft", self.ttfts),
            # The machine may be shared: the load says how much CPU the run really had.
            "load_average_1m": [round(x, 2) for x in self.load_averages],
        }


def percentiles(name: str, values: list[float]) -> dict:
    if len(values) < 2:
        return {}
    return {
        f"{name}_p50_s": round(statistics.median(values), 3),
        f"{name}_p99_s": round(statistics.quantiles(values, n=100)[98], 3),
    }


@dataclass
class Answer:
    tokens: int
    ttft_s: float | None
    """Seconds to the first chunk with text (streamed requests only)."""


def complete(session: requests.Session, url: str, body: dict, start: float) -> Answer:
    """One `/v1/completions` request; raises on any failure, including an error event inside a stream."""
    if not body.get("stream"):
        response = session.post(f"{url}/v1/completions", json=body, timeout=120)
        response.raise_for_status()
        return Answer(response.json()["usage"]["completion_tokens"], None)
    ttft, tokens = None, None
    with session.post(f"{url}/v1/completions", json=body, timeout=120, stream=True) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith(b"data: {"):
                continue  # blank separators and the final `data: [DONE]`
            chunk = json.loads(line[len(b"data: ") :])
            if "error" in chunk:
                raise RuntimeError(chunk["error"]["message"])
            if ttft is None and any(choice["text"] for choice in chunk["choices"]):
                ttft = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    if tokens is None:
        raise RuntimeError("the stream ended without its usage chunk")
    return Answer(tokens, ttft)


def run_clients(url: str, prompts: list[str], clients: int, duration_s: float, body: dict, load: Load) -> None:
    """Closed-loop load: `clients` threads, each with one request in flight, until `duration_s` has passed."""
    lock = threading.Lock()
    deadline = time.perf_counter() + duration_s

    def client(index: int) -> None:
        session = requests.Session()
        i = index
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                answer = complete(session, url, {**body, "prompt": prompts[i % len(prompts)]}, start)
            except (requests.RequestException, RuntimeError, KeyError, ValueError):
                answer = None
            with lock:
                if answer is None:
                    load.errors += 1
                else:
                    load.latencies.append(time.perf_counter() - start)
                    load.tokens += answer.tokens
                    if answer.ttft_s is not None:
                        load.ttfts.append(answer.ttft_s)
            i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    load.elapsed_s += time.perf_counter() - start  # includes the requests in flight at the deadline
    load.load_averages.append(os.getloadavg()[0])


def mode_settings(backend: str, model: str, batch_size: int) -> ServeSettings:
    if backend == "vllm":
        # float32 as the hf engine runs the tiny model (vLLM's `auto` would run it in 16 bits on CPU).
        engine = EngineConfig(backend="vllm", dtype="float32", vllm=VLLMConfig(max_num_seqs=batch_size))
        return ServeSettings(model=model, engine=engine)
    return ServeSettings(model=model, batching=Batching(max_batch_size=batch_size))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model dir or run dir (default: build the tiny model, random weights)")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--stream", action="store_true", help="stream the requests and report the time to first "
                        "token")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load per mode, over all rounds")
    parser.add_argument("--rounds", type=int, default=4, help="turns per mode")
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens of every request (a GSM8K-length "
                        "answer)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", help="results file (default: bench/results/serve.json, serve-vllm.json for vllm)")
    args = parser.parse_args()
    out = args.out or f"bench/results/serve{'-vllm' if args.backend == 'vllm' else ''}.json"

    import ray
    from ray import serve

    from serving.app import build_app

    model = args.model
    if not model:
        model = str(Path(tempfile.mkdtemp(prefix="bench-serve-")) / "tiny")
        build_tiny_model(TinyModelConfig(), model)
    prompts = [format_prompt(p["question"]) for p in get_task("arith").load("test", TaskConfig())]
    body = {"max_tokens": args.max_tokens, "temperature": 0}
    if args.stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}

    # Logical CPUs beyond a small machine's real ones, so proxies, ingresses and engine replicas all get placed.
    ray.init(address="local", num_cpus=max(6, os.cpu_count() or 1), include_dashboard=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    urls = {}
    for mode, batch_size in BATCH_SIZES.items():
        settings = mode_settings(args.backend, model, batch_size)
        serve.run(build_app(settings), name=f"bench-{mode}", route_prefix=f"/{mode}")
        urls[mode] = f"http://127.0.0.1:{args.port}/{mode}"
        run_clients(urls[mode], prompts, args.clients, 5.0, body, Load())  # warm-up
    loads = {mode: Load() for mode in BATCH_SIZES}
    for r in range(args.rounds):
        for mode in ("on", "off") if r % 2 == 0 else ("off", "on"):
            run_clients(urls[mode], prompts, args.clients, args.duration / args.rounds, body, loads[mode])
            print(f"round {r + 1} {mode}: {json.dumps(loads[mode].summary())}", flush=True)
    serve.shutdown()
    ray.shutdown()

    batch_setting = "max_num_seqs" if args.backend == "vllm" else "max_batch_size"
    results = {mode: {batch_setting: BATCH_SIZES[mode], **loads[mode].summary()} for mode in BATCH_SIZES}
    report = {
        "what": f"closed-loop clients, greedy {'streamed ' if args.stream else ''}/v1/completions, one engine "
        f"replica per mode ({args.backend}, 1 CPU thread), modes in alternating rounds",
        "backend": args.backend,
        "model": args.model or "tiny (TinyModelConfig defaults, random weights: every answer runs to max_tokens)",
        "clients": args.clients,
        "duration_s_per_mode": args.duration,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "stream": args.stream,
        **({"batch_wait_timeout_s": Batching().batch_wait_timeout_s} if args.backend == "hf" else {}),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        **results,
        "speedup_requests_per_s": round(results["on"]["requests_per_s"] / results["off"]["requests_per_s"], 2),
    }
    write_json(out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
