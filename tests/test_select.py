"""The `select` stage over several sample shards: Ray tasks pair each shard, the driver joins their parts in problem
order; a rerun keeps finished parts; a failing task and samples not laid out in problem order are one clear error.

Runs on: CPU, a local Ray (2 CPUs), synthetic graded samples; ~15 seconds.
"""

import pytest

from selfexplore.config import RunConfig
from selfexplore.errors import StageError
from selfexplore.io import read_jsonl, write_json, write_jsonl
from selfexplore.rollout import SEALED_FILE
from selfexplore.run_dir import OUTCOME_PAIRS, RFT_SET, SAMPLES, RunDir
from selfexplore.stages import select

SHARD_SIZES = (40, 6, 6)  # a large first shard: joined in completion order, its part would come last


def problem_samples(p: int) -> dict:
    """Problem p's samples: correct ones (two of them the same text), wrong ones, one truncated."""
    samples = []
    for i in range(12):
        correct = (i + p) % 3 == 0
        text = f"{p} + {i // 6} = {p + i // 6}\nThe answer is {p if correct else p + 1 + i}"
        finish = "length" if i == 11 else "stop"
        samples.append(
            {"id": f"p{p}", "sample_idx": i, "prompt": f"Q{p}\n", "completion": text, "pred": "1", "correct": correct,
             "finish_reason": finish, "n_tokens": len(text), "token_ids": [ord(c) for c in text]}
        )
    return {"id": f"p{p}", "samples": samples}


@pytest.fixture
def sealed_samples(tmp_path):
    """A run whose sample shards are sealed: in problem order, of `SHARD_SIZES` problems."""
    cfg = RunConfig(name="select", output_dir=str(tmp_path))
    run_dir = RunDir.of(cfg)
    results = [problem_samples(p) for p in range(sum(SHARD_SIZES))]
    start = 0
    for i, size in enumerate(SHARD_SIZES):
        write_jsonl(run_dir.path(SAMPLES) / f"rows-{i:05d}.jsonl", results[start : start + size])
        start += size
    write_json(run_dir.path(SAMPLES) / SEALED_FILE, {"rows": len(results), "rows_per_shard": max(SHARD_SIZES)})
    return cfg, run_dir, results


def test_parts_joined_in_problem_order_equal_pairing_each_problem_in_turn(ray_session, sealed_samples):
    cfg, run_dir, results = sealed_samples
    rft, pairs = [], []
    for result in results:
        problem_rft = select.build_rft_set(result["samples"], cfg.select.max_rft_per_problem)
        rft += problem_rft
        pairs += select.build_outcome_pairs(result["samples"], problem_rft)
    metrics = select.run(cfg, run_dir)
    assert read_jsonl(run_dir.path(RFT_SET)) == rft and read_jsonl(run_dir.path(OUTCOME_PAIRS)) == pairs
    assert metrics == {"rft_rows": len(rft), "outcome_pairs": len(pairs), "problems_with_pairs": len({p["id"] for p in pairs})}
    assert {p["id"] for p in pairs} >= {"p0", "p45", "p51"}  # every shard contributed

    # A rerun after a cut-off keeps the parts that were whole and redoes the others.
    parts = run_dir.stage_dir("select") / "parts"
    kept = {"id": "kept", "prompt": "", "completion": ""}
    write_jsonl(parts / "rft-00001.jsonl", [kept])
    (parts / "counts-00002.json").unlink()
    write_jsonl(parts / "rft-00002.jsonl", [kept])  # a part cut off before its counts: written again
    select.run(cfg, run_dir)
    rows = read_jsonl(run_dir.path(RFT_SET))
    assert rows.count(kept) == 1
    assert [r for r in rows if r != kept] == [r for r in rft if not 40 <= int(r["id"][1:]) < 46]


def test_a_failing_task_and_samples_out_of_order_are_one_clear_error(ray_session, sealed_samples):
    cfg, run_dir, _ = sealed_samples
    shard = run_dir.path(SAMPLES) / "rows-00001.jsonl"
    shard.write_text(shard.read_text() + '{"id": "broken\n')
    with pytest.raises(StageError) as failed:
        select.run(cfg, run_dir)
    assert "\n" not in str(failed.value) and f"{shard.resolve()}:7: malformed JSON" in str(failed.value)
    assert not run_dir.path(RFT_SET).exists()

    (run_dir.path(SAMPLES) / SEALED_FILE).unlink()
    with pytest.raises(StageError, match=r"not in problem order.*run `selfexplore stage sample .*config.yaml`"):
        select.run(cfg, run_dir)
