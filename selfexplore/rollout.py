"""Rollouts on Ray Data: rows stream through actors that each own one generation engine.

`sample`, `explore` and `eval` all run the same way:

    results = run_rollout(rows, SampleWorker, dict(...), cfg.engine, shard_dir, key="id", what="problems")

Ray Data shards the rows over `engine.num_engines` actors (`map_batches` with an actor pool; on a cluster the
actors spread over nodes, each with `engine.num_gpus` GPUs). The driver writes every finished batch to its own
shard file as results stream back, so a run that was cut off resumes from its finished shards: rows whose key is
already in a shard are not generated again.

Rows cross Ray Data as JSON strings: the records are nested and ragged (lists of samples, of probes), which Arrow
schema inference handles poorly, and the workers only ever need whole records.
"""

from __future__ import annotations

import abc
import json
import os
import time
from pathlib import Path

import ray

from selfexplore.config import EngineConfig
from selfexplore.io import read_jsonl, write_jsonl


class EngineWorker(abc.ABC):
    """Base of the Ray Data callable classes: loads the engine and the task once per actor.

    Subclasses implement `process(rows) -> results`, one result (a JSON-able dict) per input row.
    """

    def __init__(self, model_dir: str, engine_cfg: EngineConfig, task_name: str, **settings):
        import torch
        import transformers

        from selfexplore.engines import load_engine
        from selfexplore.tasks import get_task

        # Two cores are easily oversubscribed: one thread per engine actor (DESIGN.md, environment facts).
        torch.set_num_threads(1)
        transformers.logging.disable_progress_bar()  # one "Loading weights" bar per actor is noise
        self.engine = load_engine(model_dir, engine_cfg)
        self.task = get_task(task_name)
        self.settings = settings

    def __call__(self, batch: dict) -> dict:
        rows = [json.loads(text) for text in batch["row"]]
        return {"result": [json.dumps(result) for result in self.process(rows)]}

    @abc.abstractmethod
    def process(self, rows: list[dict]) -> list[dict]:
        """One result per row, in order."""


def run_rollout(
    rows: list[dict],
    worker_cls: type[EngineWorker],
    worker_kwargs: dict,
    engine_cfg: EngineConfig,
    shard_dir: Path,
    key: str,
    what: str,
) -> list[dict]:
    """Process `rows` with `worker_cls` actors; return one result per row, in the order of `rows`."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    shards = sorted(shard_dir.glob("part-*.jsonl"))
    done = {result[key]: result for shard in shards for result in read_jsonl(shard)}
    todo = [row for row in rows if row[key] not in done]
    progress = Progress(what, total=len(rows), done=len(rows) - len(todo))
    if done:
        print(f"  resuming: {len(rows) - len(todo)}/{len(rows)} {what} already done in {shard_dir}", flush=True)
    if todo:
        dataset = ray.data.from_items([{"row": json.dumps(row)} for row in todo])
        dataset = dataset.map_batches(
            worker_cls,
            fn_constructor_kwargs=worker_kwargs,
            batch_size=engine_cfg.rows_per_batch,
            compute=ray.data.ActorPoolStrategy(size=engine_cfg.num_engines),
            num_gpus=engine_cfg.num_gpus,
            num_cpus=engine_cfg.num_cpus,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
        )
        shard_idx = len(shards)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            results = [json.loads(text) for text in batch["result"]]
            write_jsonl(shard_dir / f"part-{shard_idx:05d}.jsonl", results)
            shard_idx += 1
            done.update((result[key], result) for result in results)
            progress.advance(len(results))
    progress.finish()
    return [done[row[key]] for row in rows]


class Progress:
    """A progress line on stdout at most every few seconds: done/total, rate, eta."""

    def __init__(self, what: str, total: int, done: int = 0, every_s: float = 5.0):
        self.what, self.total, self.done, self.every_s = what, total, done, every_s
        self.start_done, self.start = done, time.time()
        self.last_print = 0.0
        self.quiet = os.environ.get("SELFEXPLORE_QUIET") == "1"

    def advance(self, n: int) -> None:
        self.done += n
        if time.time() - self.last_print >= self.every_s:
            self._print()

    def finish(self) -> None:
        self._print(final=True)

    def _print(self, final: bool = False) -> None:
        if self.quiet:
            return
        self.last_print = now = time.time()
        elapsed = now - self.start
        rate = (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0
        eta = f", eta {(self.total - self.done) / rate:.0f}s" if rate > 0 and not final else ""
        print(f"  {self.done}/{self.total} {self.what} ({rate:.1f}/s, {elapsed:.0f}s{eta})", flush=True)
