"""Rollouts on Ray Data: rows stream through actors that each own one generation engine.

`sample`, `explore` and `eval` all run the same way:

    run_rollout(rows, SampleWorker, dict(...), cfg.engine, shard_dir, key="id", what="problems")
    for result in iter_results(shard_dir): ...

The rows go in as an iterable, read once: the driver writes those not yet done to input files, one per batch
(`inputs/`), Ray Data hands the files' paths to the engine actors, and each actor reads its batch, so the driver
never holds the rows (the rejected solutions `explore` takes in are hundreds of MB at paper scale); it keeps their
keys.

Ray Data shards the rows over `engine.num_engines` actors (`map_batches` with an actor pool; on a cluster the
actors spread over nodes, each with `engine.num_gpus` GPUs, or a placement group of `tensor_parallel_size` GPUs
for a vLLM engine that spans several). A vLLM actor works on `engine.vllm.batches_in_flight` batches at once
(threads sharing one engine), so its engine never drains between batches; batches then finish out of order, which
nothing minds: results are matched to rows by key. The driver writes every finished batch to its own shard file as
results stream back and keeps only their keys, so its memory stays bounded at any scale; later steps read the
shards back as they need them. A run that was cut off resumes from its finished shards (the pipeline deletes a stage's
directory when it starts under another fingerprint, so the shards found here were made under the current one).

Batch shards hold whatever rows a batch happened to get, so when every row is done the rollout rewrites them into
its final layout: the rows in input order, `ROWS_PER_SHARD` to a file (`rows-*.jsonl`). The files are then the same,
byte for byte, whatever the engine count, the batch size, or where a run was cut off and resumed.

Rows cross Ray Data as input file paths and results as JSON strings: the records are nested and ragged (lists of
samples, of probes), which Arrow schema inference handles poorly, and the workers only ever need whole records.
"""

from __future__ import annotations

import abc
import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import ray

from selfexplore import console
from selfexplore.config import EngineConfig
from selfexplore.errors import StageError, root_cause
from selfexplore.io import atomic_open, iter_jsonl, json_line, read_json, write_json, write_jsonl

NODES_FILE = "nodes.json"
"""Next to the shards: the node ids of the engines that did the rows (across resumes)."""
INPUTS_DIR = "inputs"
"""Next to the shards until the rollout is sealed: the rows not yet done, one file per batch, for Ray Data to read."""
SEALED_FILE = "sealed.json"
"""Next to the shards once every row is done and they are in their final layout."""
ROWS_PER_SHARD = 256
"""Rows per final shard file: part of the layout, so a constant, not an engine setting."""
ENGINES_READY_TIMEOUT_S = 1800
"""How long a rollout waits for all its engines to load (a cluster may have to scale up first)."""

class EngineWorker(abc.ABC):
    """Base of the Ray Data callable classes: loads the engine and the task once per actor.

    Subclasses implement `process(rows) -> results`, one result (a JSON-able dict) per input row. With the vLLM
    backend several batches run `process` at once on threads of one actor: it may share the engine and the task,
    nothing else it writes to.
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
        rows = [row for path in batch["input"] for row in iter_jsonl(path)]
        results = [json.dumps(result) for result in self.process(rows)]
        # Where the batch ran, for the stage's manifest; kept out of the results, which must not depend on it.
        return {"result": results, "node": [ray.get_runtime_context().get_node_id()] * len(results)}

    @abc.abstractmethod
    def process(self, rows: list[dict]) -> list[dict]:
        """One result per row, in order."""


def run_rollout(
    rows: Iterable[dict],
    worker_cls: type[EngineWorker],
    worker_kwargs: dict,
    engine_cfg: EngineConfig,
    shard_dir: Path,
    key: str,
    what: str,
) -> None:
    """Process every row of `rows` not yet in a shard of `shard_dir` with `worker_cls` actors."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    done = {result[key] for result in iter_results(shard_dir)}
    keys, n_todo = write_inputs(rows, done, key, shard_dir / INPUTS_DIR, engine_cfg.rows_per_batch)
    sealed = read_json(shard_dir / SEALED_FILE) if (shard_dir / SEALED_FILE).is_file() else None
    if sealed and (n_todo or sealed["rows"] != len(keys)):  # the stage's fingerprint rules it out; a hand-made mix
        raise StageError(f"{shard_dir} holds the results of {sealed['rows']} other rows, not these {len(keys)}; delete it and rerun")
    if done:
        console.say(f"  resuming: {len(keys) - n_todo}/{len(keys)} {what} already done in {shard_dir}")
    if n_todo:
        _generate(worker_cls, worker_kwargs, engine_cfg, shard_dir, key, what, done, len(keys))
    _seal(shard_dir, keys, key)  # also for a run cut off after its last batch, or while it sealed


def write_inputs(rows: Iterable[dict], done: set[str], key: str, inputs_dir: Path, rows_per_batch: int) -> tuple[list[str], int]:
    """Write the rows not in `done` to `inputs_dir`, `rows_per_batch` to a file; the keys of all rows, in order,
    and the number written. One row is in memory at a time."""
    shutil.rmtree(inputs_dir, ignore_errors=True)  # a cut-off run's inputs: written again from `done`
    inputs_dir.mkdir(parents=True)
    keys, n_todo, out = [], 0, None
    try:
        for row in rows:
            keys.append(row[key])
            if row[key] in done:
                continue
            if n_todo % rows_per_batch == 0:
                if out:
                    out.close()
                out = (inputs_dir / f"batch-{n_todo // rows_per_batch:05d}.jsonl").open("w", encoding="utf-8")
            out.write(json_line(row))
            n_todo += 1
    finally:
        if out:
            out.close()
    return keys, n_todo


def _generate(
    worker_cls, worker_kwargs: dict, engine_cfg: EngineConfig, shard_dir: Path, key: str, what: str, done: set[str], total: int
) -> None:
    """Run the rows of `shard_dir`'s input files through the engine actors, writing each finished batch to a shard."""
    progress = console.Progress(what, total=total, done=len(done))
    placement_groups: list = []  # one per tensor-parallel GPU engine; their GPUs go back when the rollout ends
    # A vLLM engine is thread-safe: with several `__call__`s at once on an actor (threads), their requests share the
    # engine's running batch and it never drains between batches. `hf` runs one batch at a time.
    calls = engine_cfg.vllm.batches_in_flight if engine_cfg.backend == "vllm" else 1
    # Every engine is up before the first batch goes out: else the first engine ready may take a small stage's every
    # batch, and an engine the cluster cannot place is a clear error, not a stage that silently runs on fewer.
    ray.data.DataContext.get_current().wait_for_min_actors_s = ENGINES_READY_TIMEOUT_S
    # One input file per engine call. The actors read the files themselves (the run directory is on a path every
    # node sees): Ray Data's own readers would run as tasks, each a worker process to start on CPUs the engines use.
    inputs = sorted(str(path.resolve()) for path in (shard_dir / INPUTS_DIR).iterdir())
    dataset = ray.data.from_items([{"input": path} for path in inputs], override_num_blocks=len(inputs))
    dataset = dataset.map_batches(
        worker_cls,
        fn_constructor_kwargs=worker_kwargs,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(
            size=engine_cfg.num_engines, max_concurrent_calls_per_actor=calls, enable_true_multi_threading=calls > 1
        ),
        num_cpus=engine_cfg.num_cpus,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
        # A dead engine actor (OOM-killed, node lost) is restarted and its batch retried, a few times, not forever.
        max_restarts=3,
        **engine_resources(engine_cfg, placement_groups),
    )
    shard_idx = len(list(shard_dir.glob("part-*.jsonl")))
    nodes = set(rollout_nodes(shard_dir))
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            results = [json.loads(text) for text in batch["result"]]
            write_jsonl(shard_dir / f"part-{shard_idx:05d}.jsonl", results)
            if str(batch["node"][0]) not in nodes:
                nodes.add(str(batch["node"][0]))
                write_json(shard_dir / NODES_FILE, sorted(nodes))
            shard_idx += 1
            done.update(result[key] for result in results)
            progress.update(len(done))
    except Exception as e:  # noqa: BLE001 - Ray wraps the engine's error; the user needs its last line and a way out
        raise StageError(
            f"{what}: the `{engine_cfg.backend}` engine failed ({root_cause(e)}); {len(done)}/{total} rows are "
            f"saved in {shard_dir} and a rerun resumes there. Out of memory? Lower engine.rows_per_batch"
            + (", engine.vllm.max_num_seqs or engine.vllm.gpu_memory_utilization" if engine_cfg.backend == "vllm" else "")
        ) from e
    finally:
        progress.close()
        for group in placement_groups:
            ray.util.remove_placement_group(group)


def _seal(shard_dir: Path, keys: list[str], key: str) -> None:
    """Rewrite the batch shards of a finished rollout into its final layout (`rows-*.jsonl`, in the order of `keys`).

    Crash-safe: the final files are written first, then `SEALED_FILE` says they are the shards, then the batch
    shards and the input files go. Cut off before the marker, the batch shards are still the shards and a rerun
    seals again; after it, a rerun only removes what is left. One row is in memory at a time: the rest is an index
    of where each row lies in the batch shards.
    """
    batch_shards = sorted(shard_dir.glob("part-*.jsonl"))
    if not (shard_dir / SEALED_FILE).is_file():
        where: dict[str, tuple[Path, int, int]] = {}  # key -> (batch shard, byte offset, length) of its line
        for shard in batch_shards:
            with shard.open("rb") as f:
                offset = 0
                for line in f:
                    if line.strip():
                        where[json.loads(line)[key]] = (shard, offset, len(line))
                    offset += len(line)
        missing = [k for k in keys if k not in where]
        if missing:  # the engines answered every batch, so a row without a result is our bug, not the user's
            raise StageError(f"{shard_dir}: {len(missing)} rows have no result after the rollout (first: {missing[0]})")
        for i in range(0, len(keys), ROWS_PER_SHARD):
            with atomic_open(shard_dir / f"rows-{i // ROWS_PER_SHARD:05d}.jsonl") as out:
                for k in keys[i : i + ROWS_PER_SHARD]:
                    shard, offset, length = where[k]
                    with shard.open("rb") as f:
                        f.seek(offset)
                        out.write(f.read(length).decode("utf-8"))
        write_json(shard_dir / SEALED_FILE, {"rows": len(keys), "rows_per_shard": ROWS_PER_SHARD})
    for shard in batch_shards:
        shard.unlink()
    shutil.rmtree(shard_dir / INPUTS_DIR, ignore_errors=True)


def rollout_nodes(shard_dir: Path) -> list[str]:
    """The Ray node ids of the engines that did the rows in `shard_dir` (across resumes)."""
    return read_json(shard_dir / NODES_FILE) if (shard_dir / NODES_FILE).is_file() else []


def shard_files(shard_dir: Path) -> list[Path]:
    """The shards of `shard_dir`: the final files once sealed, the batch shards before."""
    return sorted(shard_dir.glob("rows-*.jsonl" if (shard_dir / SEALED_FILE).is_file() else "part-*.jsonl"))


def iter_results(shard_dir: Path) -> Iterator[dict]:
    """Every result in `shard_dir`, one in memory at a time (input order once sealed, batch order before)."""
    for shard in shard_files(shard_dir):
        yield from iter_jsonl(shard)


def ordered_results(shard_dir: Path, rows: list[dict], key: str) -> list[dict]:
    """All results in the order of `rows`: for outputs small enough to hold (eval, per-item summaries)."""
    by_key = {result[key]: result for result in iter_results(shard_dir)}
    return [by_key[row[key]] for row in rows]


def engine_resources(cfg: EngineConfig, placement_groups: list) -> dict:
    """Ray resources of one engine actor: its GPUs, or for a tensor-parallel vLLM engine on GPUs a placement group
    per actor (`worker_bundles`), each appended to `placement_groups` for the caller to remove."""
    from selfexplore.engines.vllm import worker_bundles

    bundles = worker_bundles(cfg, cfg.num_cpus)
    if bundles is None:
        return {"num_gpus": cfg.num_gpus}

    def placement() -> dict:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        group = ray.util.placement_group(bundles, strategy="PACK")
        placement_groups.append(group)
        strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0, placement_group_capture_child_tasks=True)
        return {"scheduling_strategy": strategy}

    return {"num_gpus": 0, "ray_remote_args_fn": placement}
