"""First-pit search and step-pair construction, driven by a scripted engine whose answers depend on the prefix.

Runs on: CPU, no Ray (the search is a pure function of the engine's answers).
"""

import pytest

from selfexplore.config import ExploreConfig
from selfexplore.engines import Completion
from selfexplore.models import build_char_tokenizer
from selfexplore.stages.explore import PitSearch, build_step_pairs, explore_rejected, pit_summary, rejected_items, step_values
from selfexplore.tasks import get_task

TASK = get_task("arith")
PROMPT = "Ana has 1 cups. Then she gets 2 more. Then she gets 4 more. Then she loses 1. How many cups does Ana have now?\n"
GOLD = "6"
# Step 2 is the first wrong step (3 + 4 = 8): the pit.
REJECTED = "1 + 2 = 3\n3 + 4 = 8\n8 - 1 = 7\nThe answer is 7"
CHOSEN = "1 + 2 = 3\n3 + 4 = 7\n7 - 1 = 6\nThe answer is 6"


class ScriptedEngine:
    """Continues any prefix correctly unless the prefix already holds the wrong step `3 + 4 = 8`.

    Speaks token ids through the tiny model's character tokenizer, as the real engines do.
    """

    tokenizer = build_char_tokenizer()

    def __init__(self, pit_marker="3 + 4 = 8"):
        self.pit_marker = pit_marker
        self.calls: list[list[str]] = []

    def encode(self, text):
        return self.tokenizer(text).input_ids

    def generate(self, prompts, params):
        texts_in = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in prompts]
        self.calls.append(texts_in)
        outputs = []
        for prompt, p in zip(texts_in, params):
            solution = prompt[len(PROMPT) :]
            if self.pit_marker and self.pit_marker in solution:
                texts = ["The answer is 7"] * p.n
            else:
                rest = CHOSEN[len(solution) :]
                # One long correct continuation, one short one, the others wrong.
                texts = [rest + "\nThe answer is 6", rest] + ["The answer is 9"] * (p.n - 2)
            outputs.append([Completion(text=t, token_ids=self.encode(t)[1:], finish_reason="stop") for t in texts])
        return outputs


def item(key="p0/0", rejected=REJECTED, chosen=CHOSEN):
    token_ids = ScriptedEngine.tokenizer(rejected, add_special_tokens=False).input_ids
    return {"key": key, "id": key.split("/")[0], "rejected_idx": 0, "prompt": PROMPT, "chosen": chosen, "rejected_token_ids": token_ids, "answer": GOLD}


@pytest.mark.parametrize("strategy", ["linear", "binary"])
def test_first_pit_is_the_first_wrong_step(strategy):
    engine = ScriptedEngine()
    cfg = ExploreConfig(k=4, strategy=strategy)
    (result,) = explore_rejected([item()], engine, TASK, cfg)
    assert result["pit"] == 2
    values = {p["step"]: sum(c["correct"] for c in p["completions"]) for p in result["probes"]}
    assert values[1] == 2 and values[2] == 0
    if strategy == "linear":
        assert sorted(values) == [1, 2]  # stops at the pit: steps 3 and 4 are never probed

    pairs, dropped = build_step_pairs([item()], [pit_summary(result)])
    assert dropped == {"no_pit": 0, "no_chosen": 0, "duplicate": 0, "empty_step": 0}
    (pair,) = pairs
    assert pair["prompt"] == PROMPT + "1 + 2 = 3\n"
    assert pair["rejected"] == "3 + 4 = 8\n"
    # The shortest correct completion sampled from the prefix before the pit.
    assert pair["chosen"] == CHOSEN[len("1 + 2 = 3\n") :]
    assert pair["kind"] == "step" and pair["pit_step"] == 2


def test_binary_search_probes_fewer_steps_on_long_solutions():
    steps = [f"{i} + 1 = {i + 1}\n" for i in range(1, 16)]
    long_rejected = "".join(steps[:12]) + "13 + 1 = 99\n" + "The answer is 99"
    marker = "13 + 1 = 99"
    results = {}
    for strategy in ("linear", "binary"):
        search = PitSearch(n_steps=14, strategy=strategy)
        while (j := search.next_step()) is not None:
            prefix = long_rejected[: sum(len(s) for s in (long_rejected.splitlines(keepends=True))[:j])]
            search.record(j, 0 if marker in prefix else 3)
        results[strategy] = (search.pit, len(search.values))
    assert results["linear"] == (13, 13)
    assert results["binary"][0] == 13 and results["binary"][1] <= 5


def test_pit_at_first_step_uses_the_outcome_chosen():
    rejected = "1 + 2 = 4\n4 + 4 = 8\nThe answer is 8"
    engine = ScriptedEngine(pit_marker="1 + 2 = 4")
    (result,) = explore_rejected([item(rejected=rejected)], engine, TASK, ExploreConfig(k=4))
    assert result["pit"] == 1
    (pair,), _ = build_step_pairs([item(rejected=rejected)], [pit_summary(result)])
    assert pair == {"prompt": PROMPT, "chosen": CHOSEN, "rejected": "1 + 2 = 4\n", "id": "p0", "kind": "step", "pit_step": 1}


def test_solution_the_explorer_can_still_finish_has_no_pit():
    engine = ScriptedEngine(pit_marker=None)  # every prefix is continued correctly
    (result,) = explore_rejected([item()], engine, TASK, ExploreConfig(k=4))
    assert result["pit"] is None
    assert len(result["probes"]) == 4  # no step cap: all four steps were probed
    pairs, dropped = build_step_pairs([item()], [pit_summary(result)])
    assert pairs == [] and dropped["no_pit"] == 1


def test_probes_of_many_solutions_are_batched_per_round():
    engine = ScriptedEngine()
    items = [item(key=f"p{i}/0") for i in range(5)]
    explore_rejected(items, engine, TASK, ExploreConfig(k=4))
    assert [len(prompts) for prompts in engine.calls] == [5, 5]  # two rounds (steps 1, 2), five probes each


def test_step_pairs_never_reuse_a_chosen_or_repeat_a_pair_within_a_problem():
    engine = ScriptedEngine()
    items = [item(key="p0/0"), {**item(key="p0/1"), "rejected_idx": 1}]
    results = explore_rejected(items, engine, TASK, ExploreConfig(k=4))
    pairs, dropped = build_step_pairs(items, [pit_summary(r) for r in results])
    assert len(pairs) == 1 and dropped["duplicate"] + dropped["no_chosen"] == 1


def test_rejected_items_and_step_values():
    ids = item()["rejected_token_ids"]
    pairs = [{"id": "a", "prompt": PROMPT, "chosen": CHOSEN, "rejected_token_ids": ids}] * 2 + [{"id": "b", "prompt": PROMPT, "chosen": CHOSEN, "rejected_token_ids": ids}]
    items = rejected_items(pairs, {"a": "6", "b": "6"})
    assert [i["key"] for i in items] == ["a/0", "a/1", "b/0"]
    assert len(rejected_items(pairs, {"a": "6", "b": "6"}, limit=2)) == 2
    results = explore_rejected(items[:1], ScriptedEngine(), TASK, ExploreConfig(k=4))
    assert step_values([pit_summary(r) for r in results], 4) == [
        {"id": "a", "rejected_idx": 0, "step": 1, "k": 4, "n_correct": 2},
        {"id": "a", "rejected_idx": 0, "step": 2, "k": 4, "n_correct": 0},
    ]
