"""`dpo-outcome` and `dpo-step`: DPO from the RFT model, with the RFT model as the frozen reference.

`outcome` trains on D_pair (whole correct vs whole wrong solutions: the baseline); `step` trains on D_g-pair
(the step pairs of `explore`: Self-Explore), in the format `explore.pair_format` names. Everything else is
identical, so the comparison is fair.
"""

from __future__ import annotations

from selfexplore.config import RunConfig
from selfexplore.errors import StageError
from selfexplore.io import read_jsonl
from selfexplore.run_dir import OUTCOME_PAIRS, STEP_PAIRS, RunDir
from selfexplore.tasks import get_task
from selfexplore.train import train_dpo

PAIRS = {"outcome": OUTCOME_PAIRS, "step": STEP_PAIRS}


def next_step_pairs(pairs: list[dict], task) -> tuple[list[dict], int]:
    """Step-DPO's pairs from the paper's: the chosen cut to its first step, the one that follows the prompt as the
    rejected pit step does. A pair whose two steps are then the same text teaches nothing and is dropped."""
    out, identical = [], 0
    for pair in pairs:
        _, end = task.split_steps(pair["chosen"])[0]
        if pair["chosen"][:end] == pair["rejected"]:
            identical += 1
            continue
        out.append({**pair, "chosen": pair["chosen"][:end], "kind": "next_step"})
    return out, identical


def run(cfg: RunConfig, run_dir: RunDir, kind: str) -> dict:
    pairs = read_jsonl(run_dir.path(PAIRS[kind]))
    identical = 0
    if kind == "step" and cfg.explore.pair_format == "next_step":
        pairs, identical = next_step_pairs(pairs, get_task(cfg.task.name))
    if not pairs:
        raise StageError(f"no {kind} pairs to train on in {run_dir.path(PAIRS[kind])}")
    rft_model = run_dir.model_dir("rft")
    stage = f"dpo-{kind}"
    metrics = train_dpo(pairs, rft_model, rft_model, run_dir.model_dir(stage), cfg.dpo, run_dir.train_storage(stage), logs=run_dir.train_logs(stage))
    if kind == "step":
        metrics |= {"pair_format": cfg.explore.pair_format, "dropped_identical_steps": identical}
    return metrics
