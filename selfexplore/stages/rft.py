"""`rft`: fine-tune the base model (not the SFT model, as in the paper) on the model's own correct solutions.

The RFT model is the explorer of `explore` and both the start and the reference of `dpo`.
"""

from __future__ import annotations

from selfexplore.config import RunConfig
from selfexplore.errors import StageError
from selfexplore.io import read_jsonl
from selfexplore.run_dir import BASE_MODEL, RFT_SET, RunDir
from selfexplore.stages.sft import gold_rows
from selfexplore.tasks import get_task
from selfexplore.train import train_sft


def run(cfg: RunConfig, run_dir: RunDir) -> dict:
    rows = [{"prompt": r["prompt"], "completion": r["completion"]} for r in read_jsonl(run_dir.path(RFT_SET))]
    if cfg.rft.include_gold:
        rows += gold_rows(get_task(cfg.task.name).load("train", cfg.task))
    if not rows:
        raise StageError("the RFT set is empty: the SFT model solved no training problem; train SFT longer")
    return train_sft(
        rows, str(run_dir.path(BASE_MODEL)), run_dir.model_dir("rft"), cfg.rft, run_dir.train_storage("rft"), section="rft", logs=run_dir.train_logs("rft")
    )
