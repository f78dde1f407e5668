"""Rollout throughput: the `sample` stage through our Ray Data engine actors against one plain generate call.

    python bench/rollout.py                               # tiny model (0.9M), hf and vllm, 256 problems x 8
    python bench/rollout.py --model medium --problems 32 --n 4 --max-tokens 64   # a ~200M model, compute-bound

For each backend, the same prompts and sampling settings (the sample stage's: T=0.7, n per problem, seeded per
problem) run two ways, each with one engine:
- plain: one call over all prompts at once in this process — `vllm.LLM.generate` for vllm, our `HFEngine.generate`
  (transformers `generate` in chunks of `max_batch_sequences`) for hf;
- ours: `selfexplore.rollout.run_rollout` with the stage's `SampleWorker`: Ray Data shards the problems into
  batches of `rows_per_batch`, an actor pool hosts the engine, the driver writes a shard per finished batch. A vllm
  actor works on `batches_in_flight` batches at once (its async engine shared by that many threads; hf: 1).
Generated tokens/s counts from the moment the engine is ready (start-up is reported apart: model load, vLLM's
profiling and warm-up, Ray start for ours) to the last result written. Goal: ours >= 0.9x plain.

Writes `bench/results/rollout-<model>.json`. Runs one thing at a time: on 2 cores any other load skews both.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("SELFEXPLORE_QUIET", "1")

import torch

from selfexplore.config import EngineConfig, SampleConfig, TaskConfig, TinyModelConfig, VLLMConfig
from selfexplore.engines import SamplingParams, derive_seed, load_engine
from selfexplore.models import build_tiny_model
from selfexplore.rollout import iter_results, run_rollout
from selfexplore.stages.sample import SampleWorker
from selfexplore.tasks import format_prompt, get_task

from record import write_report  # bench/record.py

MODELS = {
    "tiny": TinyModelConfig(max_position_embeddings=256),  # the embedded default's shape: 0.87M parameters
    # ~200M parameters: decode is compute-bound on a CPU, where batching pays (hidden 1024, 16 layers).
    "medium": TinyModelConfig(hidden_size=1024, num_layers=16, num_heads=16, intermediate_size=2816, max_position_embeddings=512),
}


class TimedSampleWorker(SampleWorker):
    """The sample stage's worker, stamping when its engine became ready (start-up is reported apart)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ready_at = time.time()

    def process(self, problems: list[dict]) -> list[dict]:
        return [{**result, "engine_ready_at": self.ready_at} for result in super().process(problems)]


def plain(model_dir: str, engine_cfg: EngineConfig, problems: list[dict], cfg: SampleConfig) -> dict:
    seeds = [derive_seed(cfg.seed, "sample", p["id"]) for p in problems]
    params = [SamplingParams(n=cfg.n, temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=s) for s in seeds]
    start = time.time()
    if engine_cfg.backend == "vllm":
        # vLLM's offline engine, as a user would run it: not our engine (the async one inside the actors).
        import vllm
        from vllm.platforms import current_platform

        from selfexplore.engines.vllm import generated, vllm_engine_args, vllm_sampling

        engine = vllm.LLM(**vllm_engine_args(model_dir, engine_cfg, on_cpu=current_platform.is_cpu()))
        ready = time.time()
        tokenizer = engine.get_tokenizer()
        prompts = [{"prompt_token_ids": tokenizer(format_prompt(p["question"])).input_ids} for p in problems]
        outputs = engine.generate(prompts, [vllm_sampling(p) for p in params], use_tqdm=False)
        tokens = sum(len(generated(o)[0]) for out in outputs for o in out.outputs)
    else:
        engine = load_engine(model_dir, engine_cfg)
        ready = time.time()
        prompts = [engine.encode(format_prompt(p["question"])) for p in problems]
        tokens = sum(c.n_tokens for out in engine.generate(prompts, params) for c in out)
    end = time.time()
    del engine  # a vLLM engine's process ends with it (a few seconds, not timed): the runs that follow get the cores
    return {"startup_s": round(ready - start, 2), "generate_s": round(end - ready, 2), "tokens": tokens, "tokens_per_s": round(tokens / (end - ready), 1)}


def ours(model_dir: str, engine_cfg: EngineConfig, problems: list[dict], cfg: SampleConfig) -> dict:
    import ray

    start = time.time()
    ray.init(address="local", num_cpus=os.cpu_count(), runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}}, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    shard_dir = Path(tempfile.mkdtemp(prefix="rollout-bench-"))
    try:
        kwargs = dict(model_dir=model_dir, engine_cfg=engine_cfg, task_name="arith", sample_cfg=cfg)
        run_rollout(problems, TimedSampleWorker, kwargs, engine_cfg, shard_dir, key="id", what="problems")
        end = time.time()
        results = list(iter_results(shard_dir))
    finally:
        ray.shutdown()
        shutil.rmtree(shard_dir)
    ready = min(r["engine_ready_at"] for r in results)
    tokens = sum(s["n_tokens"] for r in results for s in r["samples"])
    return {
        "startup_s": round(ready - start, 2),
        "generate_s": round(end - ready, 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / (end - ready), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
    parser.add_argument("--backends", default="hf,vllm")
    parser.add_argument("--problems", type=int, default=256)
    parser.add_argument("--n", type=int, default=8, help="samples per problem")
    parser.add_argument("--max-tokens", type=int, default=80)
    parser.add_argument("--rows-per-batch", default="32,128", help="problems per engine call in ours (comma-separated: one run each)")
    parser.add_argument("--max-num-seqs", type=int, default=256, help="vllm: sequences decoded at once")
    parser.add_argument(
        "--batches-in-flight", default=str(VLLMConfig.batches_in_flight),
        help="vllm: batches an engine works on at once in ours (comma-separated: one run each)",
    )
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="rollout-model-"))
    model_dir = str(work / args.model)
    params = build_tiny_model(MODELS[args.model], model_dir)
    problems = get_task("arith").load("train", TaskConfig())[: args.problems]
    cfg = SampleConfig(n=args.n, temperature=0.7, max_tokens=args.max_tokens)
    results = {}
    for backend in args.backends.split(","):
        engine_cfg = EngineConfig(backend=backend, num_engines=1, dtype="float32", max_batch_sequences=256)
        engine_cfg.vllm.max_num_seqs = args.max_num_seqs
        results[backend] = {"plain": plain(model_dir, engine_cfg, problems, cfg)}
        in_flight = list(map(int, args.batches_in_flight.split(","))) if backend == "vllm" else [1]
        for rows_per_batch, batches_in_flight in itertools.product(map(int, args.rows_per_batch.split(",")), in_flight):
            engine_cfg.rows_per_batch, engine_cfg.vllm.batches_in_flight = rows_per_batch, batches_in_flight
            run = {"batches_in_flight": batches_in_flight, **ours(model_dir, engine_cfg, problems, cfg)}
            run["ours_over_plain"] = round(run["tokens_per_s"] / results[backend]["plain"]["tokens_per_s"], 3)
            key = f"ours_rows_per_batch_{rows_per_batch}" + (f"_in_flight_{batches_in_flight}" if backend == "vllm" else "")
            results[backend][key] = run
        print(backend, json.dumps(results[backend]), flush=True)
    shutil.rmtree(work)
    report = {
        "command": "python bench/rollout.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "model": {"name": args.model, "parameters": params},
        "workload": {"problems": args.problems, "n": args.n, "max_tokens": args.max_tokens, "temperature": 0.7},
        "results": results,
    }
    write_report(report, f"rollout-{args.model}", args.out)


if __name__ == "__main__":
    main()
