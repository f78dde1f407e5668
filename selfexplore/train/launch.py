"""Driver side: run the worker loop with a Ray Train `TorchTrainer` and copy the trained model out.

Assumes a running Ray session (the caller has called `ray.init`). `storage_dir` holds Ray Train's checkpoints
(a path every node can reach on a cluster: NFS, or a URI such as `s3://...`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from selfexplore.config import TrainConfig
from selfexplore.train.data import Tokenized
from selfexplore.train.worker import METRICS_FILE, MODEL_DIR, train_loop


def fit(
    kind: str,
    data: Tokenized,
    cfg: TrainConfig,
    init_model_dir: str,
    out_dir: str | Path,
    storage_dir: str | Path,
    ref_model_dir: str | None = None,
) -> dict:
    """Train with `cfg` on `data`, write the model to `out_dir` and return the metrics."""
    if data.num_examples == 0:
        raise ValueError(
            f"{kind}: no examples left to train on ({data.dropped_too_long} longer than the length limits; "
            "raise max_length or shorten the data)"
        )
    start = time.monotonic()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "kind": kind,
            "cfg": cfg,
            # Through the object store: the examples can be large and every worker reads the same copy.
            "examples": ray.put(data.examples),
            "init_model_dir": str(Path(init_model_dir).resolve()),
            "ref_model_dir": str(Path(ref_model_dir).resolve()) if ref_model_dir else None,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
            storage_path=_storage_path(storage_dir),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            # The latest training checkpoint (to resume from) and the final model.
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as final:
        metrics = json.loads((Path(final) / METRICS_FILE).read_text())
        copy_dir_atomic(Path(final) / MODEL_DIR, Path(out_dir))
    metrics.update(
        examples=data.num_examples,
        dropped_too_long=data.dropped_too_long,
        wall_s=round(time.monotonic() - start, 2),
    )
    return metrics


def _storage_path(storage_dir: str | Path) -> str:
    text = str(storage_dir)
    return text if "://" in text else str(Path(text).resolve())


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
