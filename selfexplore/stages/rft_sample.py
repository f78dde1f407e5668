"""`rft-sample` (with `select.rejected_from: rft_samples`): on-policy outcome pairs, both sides sampled from the RFT
model.

DPO starts from the RFT model, but the paper's outcome pairs are the SFT model's samples. Here the RFT model samples
the same training problems with the `sample` settings (the `sample` stage's code, pointed at the RFT model), and
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
from selfexplore.run_dir import RFT_SAMPLE_CORRECT, RFT_SAMPLE_PAIRS, RFT_SAMPLES, RunDir
from selfexplore.stages.sample import sample_model
from selfexplore.stages.select import pair_samples


def run(cfg: RunConfig, run_dir: RunDir) -> dict:
    sampled = sample_model(cfg, run_dir, "rft", RFT_SAMPLES, "problems sampled from RFT")
    selected = pair_samples(cfg, run_dir, RFT_SAMPLES, RFT_SAMPLE_CORRECT, RFT_SAMPLE_PAIRS)
    if not selected["outcome_pairs"]:  # fail here, not two stages later in `dpo-outcome`, after exploring nothing
        raise StageError(
            f"rft-sample: no outcome pairs: of {sampled['problems']} problems sampled from RFT, none has both a correct and a "
            f"complete wrong sample ({sampled['sample_accuracy']:.1%} of samples correct); train RFT longer (rft.max_steps), "
            "sample more problems (sample.max_problems, which samples SFT again too) or set select.rejected_from=samples"
        )
    return {**sampled, "correct_rows": selected["rft_rows"], "outcome_pairs": selected["outcome_pairs"], "problems_with_pairs": selected["problems_with_pairs"]}
