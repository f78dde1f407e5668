"""Driver side: run the worker loop with a Ray Train `TorchTrainer` and copy the trained model out.

Assumes a running Ray session (the caller has called `ray.init`). `storage_dir` holds Ray Train's checkpoints
while a run trains (a path every node can reach on a cluster: NFS); a run's
directory there is deleted once its model is out, and a run cut off before that resumes when called again with
the same inputs (see `run_name`). A local `init_model_dir` must be reachable by every node too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.compute as pc
import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from selfexplore import console
from selfexplore.config import TrainConfig
from selfexplore.errors import StageError
from selfexplore.run_dir import TrainLogs
from selfexplore.train.data import Tokenized


def fit(
    kind: str,
    section: str,
    data: Tokenized,
    cfg: TrainConfig,
    init_model_dir: str,
    out_dir: str | Path,
    storage_dir: str | Path,
    ref_model_dir: str | None = None,
    logs: TrainLogs | None = None,
) -> dict:
    """Train with `cfg` (the config section `section`) on `data`, write the model to `out_dir`, return the metrics.
    Every logged step goes to `logs` when given (a run's training stage); the console shows the steps as they go."""
    # Imported here, not at the top: TRL and DeepSpeed take seconds to import, and every CLI command that merely
    # imports the stages would pay for them.
    from selfexplore.train.worker import METRICS_FILE, MODEL_DIR, train_loop

    if data.num_examples == 0:
        limits = f"{section}.max_length" + (f" / {section}.max_prompt_length" if kind == "dpo" else "")
        raise StageError(
            f"{section}: no examples left to train on: {data.dropped_too_long} longer than the length limits "
            f"(raise {limits}), {data.dropped_empty} with an empty rejected response"
        )

    start = time.monotonic()
    progress = StepProgress.remote()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "kind": kind,
            "cfg": cfg,
            # Through the object store: the examples can be large, and the workers of a node share one copy.
            "examples": ray.put(data.examples),
            "init_model_dir": _absolute(init_model_dir),
            "ref_model_dir": _absolute(ref_model_dir) if ref_model_dir else None,
            "progress": progress,
            # Absolute: the workers do not share the driver's working directory.
            "logs": TrainLogs(logs.metrics.resolve(), logs.tensorboard.resolve()) if logs else None,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=run_name(kind, cfg, data, [init_model_dir, ref_model_dir]),
            storage_path=str(Path(storage_dir).resolve()),  # the run directory: a path every node sees
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            # The latest training checkpoint (to resume from) and the final model.
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    with console.Progress("training", unit="step") as bar, _following(progress, bar):
        result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"{kind}: training ended without reporting a model; the workers' output is in the stage's log")
    with result.checkpoint.as_directory() as final:
        metrics = json.loads((Path(final) / METRICS_FILE).read_text())
        copy_dir_atomic(Path(final) / MODEL_DIR, Path(out_dir))
    # What is left in storage only serves to resume this run, which is over; at scale it is the optimizer state.
    result.filesystem.delete_dir(result.path)
    metrics.update(
        examples=data.num_examples,
        dropped_too_long=data.dropped_too_long,
        wall_s=round(time.monotonic() - start, 2),
    )
    return metrics


@ray.remote(num_cpus=0)
class StepProgress:
    """Where training is, as rank 0 reports it (step, max_steps, loss); the driver polls it for its progress bar."""

    def __init__(self):
        self.state: dict = {}

    def update(self, **fields) -> None:
        self.state.update(fields)

    def get(self) -> dict:
        return self.state


@contextmanager
def _following(progress, bar: console.Progress) -> Iterator[None]:
    """Move `bar` with the steps that `progress` holds, from a thread: `TorchTrainer.fit` blocks this one."""
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(1.0):
            state = ray.get(progress.get.remote())
            if "max_steps" in state:
                bar.update(state["step"], total=state["max_steps"], note=f"loss {state['loss']:.3f}" if "loss" in state else "")

    thread = threading.Thread(target=follow, name="selfexplore-train-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_name(kind: str, cfg: TrainConfig, data: Tokenized, models: list[str | None]) -> str:
    """The Ray Train run name: a digest of everything the run depends on.

    Same inputs, same name, and Ray Train then restores a run that was cut off (driver crash, job killed) from its
    last checkpoint rather than starting over; a change in config, data or model files names a new run.
    """
    digest = hashlib.sha256()
    identities = [_model_identity(m) for m in models if m]
    digest.update(json.dumps([kind, dataclasses.asdict(cfg), identities], sort_keys=True).encode())
    # Each column as its examples' lengths, then all their token ids: the same examples give the same name however
    # the table is chunked or sliced.
    for name in sorted(data.examples.column_names):
        column = data.examples.column(name)
        digest.update(json.dumps([name, len(column)]).encode())
        for chunk in column.chunks:
            digest.update(pc.list_value_length(chunk).to_numpy().tobytes())
        for chunk in column.chunks:
            digest.update(chunk.flatten().to_numpy().tobytes())
    return f"{kind}-{digest.hexdigest()[:16]}"


def _model_identity(model: str) -> list:
    """A local model directory by its files' names, sizes and modification times; a hub name by itself."""
    path = Path(model)
    if not path.is_dir():
        return [model]
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(path.iterdir()) if f.is_file()]


def _absolute(model: str) -> str:
    """A local model directory as an absolute path (workers do not share the driver's working directory);
    anything else, such as a hub name, as given."""
    return str(Path(model).resolve()) if Path(model).exists() else model


def copy_dir_atomic(src: Path, dst: Path) -> None:
    """Copy directory `src` to `dst` through a temporary sibling and a rename, replacing any old `dst`.

    A crash leaves either the old `dst` or the new one, never a half-written directory that looks complete.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    if dst.exists():
        dst.rename(old)
    tmp.rename(dst)
    shutil.rmtree(old, ignore_errors=True)
