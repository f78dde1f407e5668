"""`dpo-outcome` and `dpo-step`: DPO from the RFT model, with the RFT model as the frozen reference.

`outcome` trains on D_pair (whole correct vs whole wrong solutions: the baseline; the SFT model's wrong samples or
the RFT model's greedy ones, as `select.rejected_from` says); `step` trains on D_g-pair
(the step pairs of `explore`: Self-Explore), in the format `explore.pair_format` names. Everything else is
identical, so the comparison is fair. Pairs are read as they are tokenised, never held as a list: at the paper's
scale they are hundreds of megabytes of text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from selfexplore.config import RunConfig
from selfexplore.errors import StageError
from selfexplore.io import iter_jsonl
from selfexplore.run_dir import STEP_PAIRS, RunDir, outcome_pairs
from selfexplore.tasks import get_task
from selfexplore.train import train_dpo

@dataclass
class NextStepPairs:
    """Step-DPO's pairs from the paper's, as `pairs` is read: the chosen cut to its first step, the one that follows
    the prompt as the rejected pit step does. A pair whose two steps are then the same text teaches nothing and is
    dropped; `identical` counts those once the pairs have been read."""

    pairs: Iterable[dict]
    task: object
    identical: int = 0

    def __iter__(self) -> Iterator[dict]:
        kept = 0
        for pair in self.pairs:
            _, end = self.task.split_steps(pair["chosen"])[0]
            if pair["chosen"][:end] == pair["rejected"]:
                self.identical += 1
                continue
            kept += 1
            yield {**pair, "chosen": pair["chosen"][:end], "kind": "next_step"}
        if not kept:
            raise StageError(f"every one of the {self.identical} step pairs has the pit step as its chosen's first step: no "
                             "`next_step` pairs to train on; set explore.pair_format=full")


def run(cfg: RunConfig, run_dir: RunDir, kind: str) -> dict:
    path = run_dir.path(outcome_pairs(cfg) if kind == "outcome" else STEP_PAIRS)
    if next(iter_jsonl(path), None) is None:
        raise StageError(f"no {kind} pairs to train on in {path}")
    next_step = NextStepPairs(iter_jsonl(path), get_task(cfg.task.name)) if kind == "step" and cfg.explore.pair_format == "next_step" else None
    pairs = next_step if next_step is not None else iter_jsonl(path)
    rft_model = run_dir.model_dir("rft")
    stage = f"dpo-{kind}"
    metrics = train_dpo(pairs, rft_model, rft_model, run_dir.model_dir(stage), cfg.dpo, run_dir.train_storage(stage), logs=run_dir.train_logs(stage))
    if kind == "step":
        metrics |= {"pair_format": cfg.explore.pair_format, "dropped_identical_steps": next_step.identical if next_step is not None else 0}
    return metrics
