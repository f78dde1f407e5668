"""First-pit search and step-pair construction, driven by a scripted engine whose answers depend on the prefix.

Runs on: CPU, no Ray (the search is a pure function of the engine's answers).
"""

import itertools

import pytest

from selfexplore.config import ExploreConfig
from selfexplore.engines import Completion
from selfexplore.models import build_char_tokenizer
from selfexplore.stages.dpo import next_step_pairs
from selfexplore.stages.explore import (
    PitSearch,
    StepPairs,
    explore_rejected,
    pit_summary,
    rejected_items,
    step_cuts,
    step_value_rows,
)
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
    prompt = PROMPT

    def __init__(self, pit_marker="3 + 4 = 8"):
        self.pit_marker = pit_marker
        self.calls: list[list[str]] = []

    def encode(self, text):
        return self.tokenizer(text).input_ids

    def generate(self, prompts, params):
        texts_in = [self.tokenizer.decode(ids, skip_special_tokens=True) for ids in prompts]
        self.calls.append(texts_in)
        return [
            [
                Completion(text=t, token_ids=self.encode(t)[1:], finish_reason="stop")
                for t in self.continuations(prompt[len(self.prompt) :], p.n)
            ]
            for prompt, p in zip(texts_in, params)
        ]

    def continuations(self, solution: str, n: int) -> list[str]:
        if self.pit_marker and self.pit_marker in solution:
            return ["The answer is 7"] * n
        rest = CHOSEN[len(solution) :]
        # One long correct continuation, one short one, the others wrong.
        return [rest + "\nThe answer is 6", rest] + ["The answer is 9"] * (n - 2)


def build_step_pairs(items: list[dict], results: list[dict]) -> tuple[list[dict], dict]:
    """The step pairs of explored solutions, made as `explore` makes them, and the counts of those dropped."""
    builder = StepPairs(TASK)
    pairs = [pair for item, result in zip(items, results) if (pair := builder.add(item, pit_summary(result)))]
    return pairs, builder.dropped


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

    pairs, dropped = build_step_pairs([item()], [result])
    assert dropped == {"no_pit": 0, "chosen_through_pit": 0, "no_chosen": 0, "duplicate": 0, "empty_step": 0}
    (pair,) = pairs
    assert pair["prompt"] == PROMPT + "1 + 2 = 3\n"
    assert pair["rejected"] == "3 + 4 = 8\n"
    # The shortest correct completion sampled from the prefix before the pit.
    assert pair["chosen"] == CHOSEN[len("1 + 2 = 3\n") :]
    assert pair["kind"] == "step" and pair["pit_step"] == 2


def search(values: list[int], strategy: str, last_known: bool = False) -> tuple[int | None, int]:
    """Run a pit search against fixed values (values[j - 1] for step j): (pit, number of probes)."""
    pit_search, probes = PitSearch(len(values), strategy), 0
    if last_known:  # as `explore` does: the whole solution's value is its grade, not a probe
        pit_search.record(len(values), values[-1])
    while (j := pit_search.next_step()) is not None:
        assert j not in pit_search.values  # never probes a step twice
        pit_search.record(j, values[j - 1])
        probes += 1
    pit = pit_search.pit
    assert pit is None or pit == 1 or pit - 1 in pit_search.values  # the chosen's prefix was probed
    return pit, probes


def local_pits(values: list[int]) -> list[int]:
    """Steps with value 0 whose previous step has value > 0 (or step 1)."""
    return [j for j in range(1, len(values) + 1) if values[j - 1] == 0 and (j == 1 or values[j - 2] > 0)]


@pytest.mark.parametrize(
    "values, linear, binary",
    [
        ([0, 3, 3], 1, 1),  # last step positive: binary scans
        ([2, 0, 2, 2, 2], 2, 2),
        ([2, 2, 0, 0, 0], 3, 3),
        ([2, 2, 2], None, None),
        ([0, 2, 0, 0], 1, 3),  # two pits in noisy values: binary's has a probed positive step before it
    ],
)
def test_pit_search_cases(values, linear, binary):
    assert search(values, "linear")[0] == linear and search(values, "binary")[0] == binary


def test_binary_finds_a_pit_exactly_when_linear_does_and_the_same_one_when_there_is_one():
    differ = 0
    for n in range(1, 7):
        for values in map(list, itertools.product((0, 1, 2), repeat=n)):
            first_zero = next((j for j in range(1, n + 1) if values[j - 1] == 0), None)
            assert search(values, "linear")[0] == first_zero
            for last_known in {False, values[-1] == 0}:  # as `explore` runs it when the last value is 0
                pit = search(values, "binary", last_known)[0]
                assert (pit is None) == (first_zero is None)
                assert pit is None or pit in local_pits(values)
                if len(local_pits(values)) <= 1 or values[-1] > 0:
                    assert pit == first_zero
                differ += pit != first_zero
    assert differ > 0  # non-monotone sequences where binary's pit is a later one exist, and are enumerated


def test_binary_probes_fewer_steps_than_linear_on_monotone_values():
    n = 12
    for last_known in (False, True):
        linear, binary = [], []
        for pit in range(1, n + 1):
            values = [2] * (pit - 1) + [0] * (n - pit + 1)
            for strategy, probes in (("linear", linear), ("binary", binary)):
                found, count = search(values, strategy, last_known)
                assert found == pit
                probes.append(count)
        assert max(binary) <= 4 + (not last_known)  # ceil(log2 12) bisection probes, plus the last step if unknown
        assert sum(binary) / n < 0.75 * sum(linear) / n


def test_pit_at_first_step_uses_the_outcome_chosen():
    rejected = "1 + 2 = 4\n4 + 4 = 8\nThe answer is 8"
    engine = ScriptedEngine(pit_marker="1 + 2 = 4")
    (result,) = explore_rejected([item(rejected=rejected)], engine, TASK, ExploreConfig(k=4))
    assert result["pit"] == 1
    (pair,), _ = build_step_pairs([item(rejected=rejected)], [result])
    assert pair == {"prompt": PROMPT, "chosen": CHOSEN, "rejected": "1 + 2 = 4\n", "id": "p0", "kind": "step", "pit_step": 1}


@pytest.mark.parametrize("strategy", ["linear", "binary"])
def test_a_wrong_answer_line_after_right_steps_is_the_pit_without_a_probe(strategy):
    engine = ScriptedEngine(pit_marker=None)  # every probed prefix is continued correctly
    (result,) = explore_rejected([item()], engine, TASK, ExploreConfig(k=4, strategy=strategy))
    assert result["pit"] == 4  # the whole solution is wrong: its last step is the pit
    assert [p["step"] for p in result["probes"]] == ([1, 2, 3] if strategy == "linear" else [2, 3])
    (pair,), _ = build_step_pairs([item()], [result])
    assert pair["rejected"] == "The answer is 7" and pair["chosen"] == "The answer is 6"


APPEND_PROMPT = "Ana has 5 cups. Then she gets 7 more. How many cups does Ana have now?\n"


class AppendingEngine(ScriptedEngine):
    """From a prefix of the right solution `5 + 7 = 12\nThe answer is 12`, writes the rest of it; from any other
    prefix, writes the digit `2`."""

    prompt = APPEND_PROMPT
    right = "5 + 7 = 12\nThe answer is 12"

    def continuations(self, solution: str, n: int) -> list[str]:
        return [self.right[len(solution) :] if self.right.startswith(solution) else "2"] * n


@pytest.mark.parametrize("strategy", ["linear", "binary"])
def test_the_whole_solution_is_never_probed_so_an_appended_digit_cannot_hide_the_pit(strategy):
    rejected = "5 + 7 = 12\nThe answer is 1"  # right step, slip in the answer line
    # Probing the whole solution, as before, graded `The answer is 1` + `2` correct: value 4, no pit.
    assert TASK.grade(rejected + "2", "12")
    engine = AppendingEngine()
    rejected_item = {**item(rejected=rejected), "prompt": APPEND_PROMPT, "answer": "12"}
    (result,) = explore_rejected([rejected_item], engine, TASK, ExploreConfig(k=4, strategy=strategy))
    assert result["pit"] == 2
    probed = [prompt[len(APPEND_PROMPT) :] for call in engine.calls for prompt in call]
    assert probed == ["5 + 7 = 12\n"]  # every probe ends at a step's newline; the whole solution is not probed


class PieceTokenizer:
    """Token i decodes to PIECES[i]: newlines share a token with the next step's first character, as in
    SentencePiece vocabularies (`▁3\n3`)."""

    pieces = ["1 + 2 =", " 3\n3", " + 4 =", " 8\nThe", " answer is 8"]

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.pieces[i] for i in ids)


def test_a_step_end_inside_a_token_takes_the_whole_token():
    tokenizer, ids = PieceTokenizer(), list(range(5))
    text = tokenizer.decode(ids)
    cuts = step_cuts(tokenizer, ids, TASK.split_steps(text))
    # Cut before the token, step 2's prefix would be `... 3 + 4 =` and a probe could write the right `7`.
    assert [tokenizer.decode(ids[:c]) for c in cuts] == ["1 + 2 = 3\n3", "1 + 2 = 3\n3 + 4 = 8\nThe", text]


def test_a_sentence_step_ends_at_its_full_stop_not_in_the_next_word():
    tokenizer = PieceTokenizer()
    tokenizer.pieces = ["x = 5.", " Then", " y = 2."]
    text = "x = 5. Then y = 2."
    assert step_cuts(tokenizer, [0, 1, 2], [(0, 7), (7, len(text))]) == [1, 3]


def test_probes_of_many_solutions_are_batched_per_round():
    engine = ScriptedEngine()
    items = [item(key=f"p{i}/0") for i in range(5)]
    explore_rejected(items, engine, TASK, ExploreConfig(k=4))
    assert [len(prompts) for prompts in engine.calls] == [5, 5]  # two rounds (steps 1, 2), five probes each


def test_step_pairs_never_reuse_a_chosen_or_repeat_a_pair_within_a_problem():
    engine = ScriptedEngine()
    items = [item(key="p0/0"), {**item(key="p0/1"), "rejected_idx": 1}]
    results = explore_rejected(items, engine, TASK, ExploreConfig(k=4))
    pairs, dropped = build_step_pairs(items, results)
    assert len(pairs) == 1 and dropped["duplicate"] + dropped["no_chosen"] == 1


def test_a_chosen_that_begins_with_the_pit_step_is_never_paired_with_it():
    """It reached the answer through the step the pair rejects: the next shortest correct completion is the chosen,
    and with none left, or for a pit at step 1 whose outcome chosen begins with step 1, the pair is dropped."""
    steps = ["1 + 2 = 3\n", "3 + 4 = 8\n", "8 - 1 = 7\n", "The answer is 7"]
    through = "3 + 4 = 8\n8 - 2 = 6\nThe answer is 6"  # a lucky completion through the pit step, and the shortest
    right = "3 + 4 = 7\n7 - 1 = 6\nThe answer is 6"

    def summary(pit, candidates):
        return {"pit": pit, "steps_before_pit": "".join(steps[: pit - 1]), "pit_step": steps[pit - 1], "candidates": candidates}

    builder = StepPairs(TASK)
    assert builder.add(item(key="a/0"), summary(2, [through, right]))["chosen"] == right
    assert builder.add(item(key="b/0"), summary(2, [through])) is None
    # Pit at step 1: the outcome pair's chosen is the only candidate; here it begins with the rejected step 1.
    assert builder.add(item(key="c/0"), summary(1, [])) is None
    assert builder.add(item(key="d/0", chosen="1 + 2 = 4\n4 + 4 = 6\nThe answer is 6"), summary(1, []))["rejected"] == steps[0]
    # A token straddling the step's end put the next step's first character into the pit step (`step_cuts`).
    straddled = {**summary(2, [through, right]), "pit_step": "3 + 4 = 8\n8"}
    assert builder.add(item(key="e/0"), straddled)["chosen"] == right
    assert builder.dropped["chosen_through_pit"] == 2 and sum(builder.dropped.values()) == 2


def test_next_step_pairs_keep_one_step_on_each_side():
    pair = {"prompt": PROMPT + "1 + 2 = 3\n", "chosen": "3 + 4 = 7\n7 - 1 = 6\nThe answer is 6", "rejected": "3 + 4 = 8\n", "id": "a", "kind": "step", "pit_step": 2}
    last_step = {**pair, "prompt": PROMPT + "1 + 2 = 3\n3 + 4 = 7\n7 - 1 = 6\n", "chosen": "The answer is 6", "rejected": "The answer is 5"}
    pairs = list(next_step_pairs([pair, last_step], TASK))
    assert [(p["chosen"], p["rejected"], p["kind"]) for p in pairs] == [
        ("3 + 4 = 7\n", "3 + 4 = 8\n", "next_step"),
        ("The answer is 6", "The answer is 5", "next_step"),
    ]
    assert pairs[0]["prompt"] == pair["prompt"]


def test_rejected_items_and_step_values():
    ids = item()["rejected_token_ids"]
    pairs = [{"id": "a", "prompt": PROMPT, "chosen": CHOSEN, "rejected_token_ids": ids}] * 2 + [{"id": "b", "prompt": PROMPT, "chosen": CHOSEN, "rejected_token_ids": ids}]
    items = list(rejected_items(pairs, {"a": "6", "b": "6"}))
    assert [i["key"] for i in items] == ["a/0", "a/1", "b/0"]
    assert len(list(rejected_items(pairs, {"a": "6", "b": "6"}, limit=2))) == 2
    (result,) = explore_rejected(items[:1], ScriptedEngine(), TASK, ExploreConfig(k=4))
    assert step_value_rows(pit_summary(result), 4) == [
        {"id": "a", "rejected_idx": 0, "step": 1, "k": 4, "n_correct": 2},
        {"id": "a", "rejected_idx": 0, "step": 2, "k": 4, "n_correct": 0},
    ]
