"""`dpo-outcome` and `dpo-step`: DPO from the RFT model, with the RFT model as the frozen reference.

`outcome` trains on D_pair (whole correct vs whole wrong solutions: the baseline); `step` trains on D_g-pair
(the step pairs of `explore`: Self-Explore). Everything else is identical, so the comparison is fair.
"""

from __future__ import annotations

from pathlib import Path

from selfexplore.config import RunConfig
from selfexplore.errors import StageError
from selfexplore.io import read_jsonl
from selfexplore.train import train_dpo

PAIR_FILES = {"outcome": ("sample", "pairs.jsonl"), "step": ("explore", "gpairs.jsonl")}


def run(cfg: RunConfig, run_dir: Path, kind: str) -> dict:
    pairs = read_jsonl(run_dir.joinpath(*PAIR_FILES[kind]))
    if not pairs:
        raise StageError(f"no {kind} pairs to train on in {run_dir.joinpath(*PAIR_FILES[kind])}")
    rft_model = str(run_dir / "rft" / "model")
    out = run_dir / f"dpo-{kind}"
    return train_dpo(pairs, rft_model, rft_model, out / "model", cfg.dpo, out / "ray")
