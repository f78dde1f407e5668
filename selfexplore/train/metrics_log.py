"""Rank 0's record of a training run: every logged step as a line of `metrics.jsonl` and as TensorBoard scalars.

Both live in the run directory (on a cluster, storage every node sees), so they outlive the workers. A run that
resumes from a checkpoint at step S first drops the lines of later steps, written by the run that was cut off,
and TensorBoard hides their events (`purge_step`): every step is recorded once.
"""

from __future__ import annotations

import json

from torch.utils.tensorboard import SummaryWriter

from selfexplore.io import read_jsonl, write_jsonl
from selfexplore.run_dir import TrainLogs


class MetricsLog:
    def __init__(self, logs: TrainLogs, resumed_from_step: int):
        kept = [row for row in read_jsonl(logs.metrics) if row["step"] <= resumed_from_step] if logs.metrics.is_file() else []
        write_jsonl(logs.metrics, kept)
        self.file = logs.metrics.open("a", encoding="utf-8")
        self.tensorboard = SummaryWriter(str(logs.tensorboard), purge_step=resumed_from_step + 1)

    def write(self, step: int, logs: dict[str, float]) -> None:
        """One logged step: the Trainer's logs (loss, learning_rate, grad_norm, epoch; for DPO rewards/...)."""
        self.file.write(json.dumps({"step": step, **logs}) + "\n")
        self.file.flush()
        for key, value in logs.items():
            if isinstance(value, (int, float)):  # TensorBoard scalars only; the JSON line keeps everything
                self.tensorboard.add_scalar(f"train/{key}", value, step)
        self.tensorboard.flush()

    def close(self) -> None:
        self.file.close()
        self.tensorboard.close()
