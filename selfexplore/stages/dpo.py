"""`dpo-outcome` and `dpo-step`: DPO from the RFT model, with the RFT model as the frozen reference.

`outcome` trains on D_pair (whole correct vs whole wrong solutions: the baseline; the SFT model's wrong samples or
the RFT model's greedy ones, as `select.rejected_from` says); `step` trains on D_g-pair
(the step pairs of `explore`: Self-Explore), in the format `explore.pair_format` names. Everything else is
identical, so the comparison is fair. Pairs are read as they are tokenised, never held as a list: at the paper's
scale they are hundreds of megabytes of text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from selfexplore.config import RunConfig
from selfexplore.errors import StageError
from selfexplore.io import iter_jsonl
from selfexplore.run_dir import STEP_PAIRS, RunDir, outcome_pairs
from selfexplore.tasks import get_task
from selfexplore.train import train_dpo


def next_step_pairs(pairs: Iterable[dict], task) -> Iterator[dict]:
    """Step-DPO's pairs from the paper's, as `pairs` is read: the chosen cut to its first step, the one that follows
    the prompt as the rejected pit step does (never the pit step itself: `explore` pairs no chosen that begins with
    it)."""
    for pair in pairs:
        _, end = task.split_steps(pair["chosen"])[0]
        yield {**pair, "chosen": pair["chosen"][:end], "kind": "next_step"}


def run(cfg: RunConfig, run_dir: RunDir, kind: str) -> dict:
    path = run_dir.path(outcome_pairs(cfg) if kind == "outcome" else STEP_PAIRS)
    if next(iter_jsonl(path), None) is None:
        raise StageError(f"no {kind} pairs to train on in {path}")
    pairs = iter_jsonl(path)
    if kind == "step" and cfg.explore.pair_format == "next_step":
        pairs = next_step_pairs(pairs, get_task(cfg.task.name))
    rft_model = run_dir.model_dir("rft")
    stage = f"dpo-{kind}"
    metrics = train_dpo(pairs, rft_model, rft_model, run_dir.model_dir(stage), cfg.dpo, run_dir.train_storage(stage), logs=run_dir.train_logs(stage))
    if kind == "step":
        metrics["pair_format"] = cfg.explore.pair_format
    return metrics
