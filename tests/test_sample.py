"""RFT set selection and outcome pairing from graded samples. Runs on: CPU, no Ray."""

from selfexplore.stages.sample import SampleStats
from selfexplore.stages.select import build_outcome_pairs, build_rft_set


def sample(idx, completion, correct, finish_reason="stop", pred="1"):
    return {"id": "p", "sample_idx": idx, "prompt": "Q\n", "completion": completion, "pred": pred, "correct": correct, "finish_reason": finish_reason, "n_tokens": len(completion), "token_ids": [ord(c) for c in completion]}


def test_rft_set_keeps_distinct_correct_solutions_in_sample_order_up_to_the_cap():
    samples = [sample(0, "a\nThe answer is 1", True), sample(1, "a\nThe answer is 1 ", True), sample(2, "wrong", False)]
    samples += [sample(3 + i, f"b{i}\nThe answer is 1", True) for i in range(10)]
    rows = build_rft_set(samples, max_per_problem=8)
    assert [r["completion"] for r in rows] == ["a\nThe answer is 1"] + [f"b{i}\nThe answer is 1" for i in range(7)]
    assert rows[0] == {"id": "p", "prompt": "Q\n", "completion": "a\nThe answer is 1"}


def test_outcome_pairs_use_complete_wrong_solutions_once_each_least_similar_first():
    samples = [
        sample(0, "1 + 1 = 2\nThe answer is 2", True),
        sample(1, "1 + 2 = 3\nThe answer is 3", True),
        sample(2, "1 + 1 = 3\nThe answer is 3", False),
        sample(3, "9 - 9 = 0\nThe answer is 0", False),
        sample(4, "1 + 1 = 2\n2 + 2", False, finish_reason="length", pred=None),  # truncated: never a negative
        sample(5, "9 - 9 = 0\nThe answer is 0", False),  # duplicate of 3
    ]
    rft = build_rft_set(samples, 8)
    pairs = build_outcome_pairs(samples, rft)
    assert len(pairs) == 2
    assert pairs[0]["chosen"] == "1 + 1 = 2\nThe answer is 2" and pairs[0]["rejected"] == "9 - 9 = 0\nThe answer is 0"
    assert pairs[1]["rejected"] == "1 + 1 = 3\nThe answer is 3"
    assert all(p["kind"] == "outcome" and p["pit_step"] is None and p["prompt"] == "Q\n" for p in pairs)
    # the rejected solution's own tokens travel with it, for exploration in token space
    assert pairs[0]["rejected_token_ids"] == [ord(c) for c in "9 - 9 = 0\nThe answer is 0"]


def test_no_pairs_without_wrong_solutions_and_stats():
    samples = [sample(0, "x\nThe answer is 1", True)]
    rft = build_rft_set(samples, 8)
    assert build_outcome_pairs(samples, rft) == []
    stats = SampleStats()
    stats.add(samples)
    stats.add([sample(0, "y", False, pred=None)])
    stats = stats.summary()
    assert stats["pass_at_n"] == 0.5 and stats["sample_accuracy"] == 0.5 and stats["problems_without_correct"] == 1
