"""`dpo-outcome` and `dpo-step`: DPO from the RFT model, with the RFT model as the frozen reference.

`outcome` trains on D_pair (whole correct vs whole wrong solutions: the baseline); `step` trains on D_g-pair
(the step pairs of `explore`: Self-Explore). Everything else is identical, so the comparison is fair.
"""

from __future__ import annotations

from selfexplore.config import RunConfig
from selfexplore.errors import StageError
from selfexplore.io import read_jsonl
from selfexplore.run_dir import OUTCOME_PAIRS, STEP_PAIRS, RunDir
from selfexplore.train import train_dpo

PAIRS = {"outcome": OUTCOME_PAIRS, "step": STEP_PAIRS}


def run(cfg: RunConfig, run_dir: RunDir, kind: str) -> dict:
    pairs = read_jsonl(run_dir.path(PAIRS[kind]))
    if not pairs:
        raise StageError(f"no {kind} pairs to train on in {run_dir.path(PAIRS[kind])}")
    rft_model = run_dir.model_dir("rft")
    stage = f"dpo-{kind}"
    return train_dpo(pairs, rft_model, rft_model, run_dir.model_dir(stage), cfg.dpo, run_dir.train_storage(stage), logs=run_dir.train_logs(stage))
