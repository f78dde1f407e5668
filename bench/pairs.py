"""What the two kinds of DPO pair hold, checked against the arith truth: why step pairs and outcome pairs train
nearly the same thing on arith.

    python bench/pairs.py runs/method/seed-0 runs/method/seed-1 runs/method/seed-2

An arith problem has one right solution, so a wrong solution and a right one share every step before the wrong
one's first wrong step whenever the right one took no detour. DPO's loss sees only where two responses differ:
shared leading tokens have the same probability in both and cancel in the margin. Such an outcome pair already
acts from the first wrong step on, as a step pair at the true pit would. Per run (`select.rejected_from` decides
which outcome pairs the run explored and trained on):
- outcome pairs: the share whose chosen has the rejected's steps before its first wrong step (`shares_prefix`; a
  first wrong step at step 1 leaves nothing to share, so also among those whose first step is right), whose
  rejected has a right first step, whose chosen holds a wrong step (a lucky answer);
- step pairs (`explore/gpairs.jsonl`): the labels the truth contradicts (`bench/dpo_diagnosis.py`'s
  `label_quality`), and the explored solutions that made no pair, by why (the explore stage's `dropped`).

Reads finished runs only (no training, seconds). Writes `bench/results/pairs.json`.
"""

from __future__ import annotations

import argparse

from selfexplore.io import read_jsonl
from selfexplore.run_dir import STEP_PAIRS, RunDir, outcome_pairs
from selfexplore.tasks.arith import first_wrong_step, split_steps

from dpo_diagnosis import label_quality  # bench/dpo_diagnosis.py
from record import write_report  # bench/record.py


def steps(text: str) -> list[str]:
    return [text[a:b].strip() for a, b in split_steps(text)]


def outcome_pair_quality(pairs: list[dict]) -> dict:
    """For the outcome pairs whose rejected has a wrong step (all, unless it only failed to answer)."""
    shares = shares_after_right = first_right = lucky = n = 0
    for pair in pairs:
        question = pair["prompt"].strip()
        wrong = first_wrong_step(question, pair["rejected"])
        if wrong is None:
            continue
        n += 1
        rejected, chosen = steps(pair["rejected"]), steps(pair["chosen"])
        shared = rejected[: wrong - 1] == chosen[: wrong - 1]
        shares += shared
        first_right += wrong > 1
        shares_after_right += wrong > 1 and shared
        lucky += first_wrong_step(question, pair["chosen"]) is not None
    return {
        "pairs": len(pairs),
        "with_a_wrong_step": n,
        "shares_prefix": shares / max(1, n),
        "rejected_first_step_right": first_right / max(1, n),
        # the same share where there is a prefix to share (a first wrong step at step 1 shares nothing, trivially)
        "shares_prefix_when_first_step_right": shares_after_right / max(1, first_right),
        "chosen_with_a_wrong_step": lucky / max(1, n),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="finished arith run directories")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    report = {"command": "python bench/pairs.py " + " ".join(args.runs), "runs": {}}
    for path in args.runs:
        run_dir, cfg = RunDir.open(path)
        explore = run_dir.manifest("explore")["metrics"]
        report["runs"][path] = {
            "outcome": outcome_pair_quality(read_jsonl(run_dir.path(outcome_pairs(cfg)))),
            "step": {**label_quality(read_jsonl(run_dir.path(STEP_PAIRS))), "explored": explore["rejected"], "not_paired": explore["dropped"]},
        }
        print(path, report["runs"][path], flush=True)
    write_report(report, "pairs", args.out)


if __name__ == "__main__":
    main()
