"""`rft-greedy` (with `select.rejected_from: rft_greedy`): on-policy outcome pairs, whose rejected side the RFT
model itself writes.

DPO starts from the RFT model, but the paper's outcome pairs hold the SFT model's wrong samples, and the RFT model
already prefers the chosen side of most of them (`bench/decisions.py`: 71-83% on arith). Here the RFT model solves
each sampled training problem greedily (the `sample` stage's worker at n=1, temperature 0); where its solution is
complete and wrong, it is the rejected side, paired with the problem's first correct SFT sample (the first row of
the RFT set). One pair per problem; problems the SFT model never solved have none.

Writes `rft-greedy/solutions/` (rollout shards: the greedy solutions, graded) and `rft-greedy/pairs.jsonl` (rows
as `select/pairs.jsonl`'s), in problem order.
"""

from __future__ import annotations

import dataclasses

from selfexplore.config import RunConfig
from selfexplore.errors import StageError
from selfexplore.io import atomic_open, iter_jsonl, json_line
from selfexplore.rollout import iter_results, rollout_nodes, run_rollout
from selfexplore.run_dir import ON_POLICY_PAIRS, RFT_GREEDY, RFT_SET, RunDir
from selfexplore.stages.sample import SampleWorker, sampled_problems
from selfexplore.stages.select import build_outcome_pairs


def run(cfg: RunConfig, run_dir: RunDir) -> dict:
    greedy = dataclasses.replace(cfg.sample, n=1, temperature=0.0)
    worker_kwargs = dict(model_dir=run_dir.model_dir("rft"), engine_cfg=cfg.engine, task_name=cfg.task.name, sample_cfg=greedy)
    run_rollout(sampled_problems(cfg), SampleWorker, worker_kwargs, cfg.engine, run_dir.path(RFT_GREEDY), key="id", what="problems solved greedily by RFT")
    first_correct: dict[str, dict] = {}  # problem id -> its first RFT row: one row per problem in memory
    for row in iter_jsonl(run_dir.path(RFT_SET)):
        first_correct.setdefault(row["id"], row)
    problems = solved = pairs = 0
    with atomic_open(run_dir.path(ON_POLICY_PAIRS)) as out:
        for result in iter_results(run_dir.path(RFT_GREEDY)):
            problems += 1
            solved += result["samples"][0]["correct"]
            chosen = [first_correct[result["id"]]] if result["id"] in first_correct else []
            for pair in build_outcome_pairs(result["samples"], chosen):
                out.write(json_line(pair))
                pairs += 1
    if not pairs:  # fail here, not two stages later in `dpo-outcome`, after exploring nothing
        raise StageError(
            f"rft-greedy: no outcome pairs: RFT solved {solved} of {problems} problems greedily, and no other one has a "
            "complete wrong greedy solution and a correct sample to pair it with; train RFT longer (rft.max_steps), sample "
            "more problems (sample.max_problems) or set select.rejected_from=samples"
        )
    return {"problems": problems, "greedy_accuracy": solved / max(1, problems), "outcome_pairs": pairs, "nodes": rollout_nodes(run_dir.path(RFT_GREEDY))}
