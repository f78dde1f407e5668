"""`rft`: fine-tune the base model (not the SFT model, as in the paper) on the model's own correct solutions.

The RFT model is the explorer of `explore` and both the start and the reference of `dpo`.
"""

from __future__ import annotations

from collections.abc import Iterator

from selfexplore.config import RunConfig
from selfexplore.errors import StageError
from selfexplore.io import iter_jsonl
from selfexplore.run_dir import BASE_MODEL, RFT_SET, RunDir
from selfexplore.stages.sft import gold_rows
from selfexplore.tasks import get_task
from selfexplore.train import train_sft


def training_rows(cfg: RunConfig, run_dir: RunDir) -> Iterator[dict]:
    """The RFT set, read as it is trained on (whole solutions: at the paper's scale 114 MB of JSON, a gigabyte as
    Python objects), then the gold solutions when `rft.include_gold`."""
    for row in iter_jsonl(run_dir.path(RFT_SET)):
        yield {key: row[key] for key in ("prompt", "completion") if key in row}  # a row without one: tokenize_sft says which
    if cfg.rft.include_gold:
        yield from gold_rows(get_task(cfg.task.name).load("train", cfg.task))


def run(cfg: RunConfig, run_dir: RunDir) -> dict:
    if not cfg.rft.include_gold and next(iter_jsonl(run_dir.path(RFT_SET)), None) is None:
        raise StageError("the RFT set is empty: the SFT model solved no training problem; train SFT longer")
    return train_sft(
        training_rows(cfg, run_dir), str(run_dir.path(BASE_MODEL)), run_dir.model_dir("rft"), cfg.rft,
        run_dir.train_storage("rft"), section="rft", logs=run_dir.train_logs("rft"),
    )
