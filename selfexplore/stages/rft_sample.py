"""`rft-sample` (with `select.rejected_from: rft_samples`): on-policy outcome pairs, both sides sampled from the RFT
model.

DPO starts from the RFT model, but the paper's outcome pairs are the SFT model's samples. Here the RFT model samples
the same training problems with the `sample` settings (the `sample` stage's worker, pointed at the RFT model), and
the pairs are selected from its samples as `select` selects them from the SFT model's: each distinct correct sample
with the least similar complete wrong one. So `explore` searches the RFT model's own wrong solutions, and both DPO
stages train on its own pairs. It costs a second sampling; `rft_greedy` needs only greedy decoding.

Writes `rft-sample/samples/` (rollout shards, as `sample/samples/`), `rft-sample/correct.jsonl` (the distinct correct
samples, the chosen candidates: rows as `select/rft.jsonl`'s, never trained on as RFT) and `rft-sample/pairs.jsonl`
(rows as `select/pairs.jsonl`'s), in problem order.
"""

from __future__ import annotations

from selfexplore.config import RunConfig
from selfexplore.errors import StageError
from selfexplore.rollout import iter_results, rollout_nodes, run_rollout
from selfexplore.run_dir import RFT_SAMPLE_CORRECT, RFT_SAMPLE_PAIRS, RFT_SAMPLES, RunDir
from selfexplore.stages.sample import SampleStats, SampleWorker, sampled_problems
from selfexplore.stages.select import pair_samples


def run(cfg: RunConfig, run_dir: RunDir) -> dict:
    worker_kwargs = dict(model_dir=run_dir.model_dir("rft"), engine_cfg=cfg.engine, task_name=cfg.task.name, sample_cfg=cfg.sample)
    run_rollout(sampled_problems(cfg), SampleWorker, worker_kwargs, cfg.engine, run_dir.path(RFT_SAMPLES), key="id", what="problems sampled from RFT")
    stats = SampleStats()
    for result in iter_results(run_dir.path(RFT_SAMPLES)):  # one problem's samples in memory at a time
        stats.add(result["samples"])
    selected = pair_samples(cfg, run_dir, "rft-sample", RFT_SAMPLES, RFT_SAMPLE_CORRECT, RFT_SAMPLE_PAIRS)
    sampled = stats.summary()
    if not selected["outcome_pairs"]:  # fail here, not two stages later in `dpo-outcome`, after exploring nothing
        raise StageError(
            f"rft-sample: no outcome pairs: of {sampled['problems']} problems sampled from RFT, none has both a correct and a "
            f"complete wrong sample ({sampled['sample_accuracy']:.1%} of samples correct); sample more (sample.n, "
            "sample.max_problems) or set select.rejected_from=samples"
        )
    return {**sampled, **selected, "nodes": rollout_nodes(run_dir.path(RFT_SAMPLES))}
