"""`explore`: find the first pit of every rejected solution with the RFT model, and build step-level pairs.

A rejected solution of M steps has prefixes 1..M (prefix j = question + steps 1..j). From a probed prefix the
explorer samples k completions; the prefix's Monte-Carlo value is how many of them reach the gold answer.
The **first pit** is the first step j after which none of the k completions is correct. The step pair is

    prompt   = question + steps 1..j-1
    chosen   = the shortest correct completion sampled from that prompt (for j = 1: the outcome pair's chosen,
               itself a correct sample from the bare question) that does not begin with step j
    rejected = step j alone (a partial solution: DPO gives it no end-of-sequence token)

A correct completion that begins with step j reached the answer through it: it contradicts the pit (a miss of the
k samples), and as the chosen it would hold the rejected step as its own prefix, so DPO's margin would be the
chosen's tail alone and nothing would be pushed down. The original code meant to filter these out (its filter
tested list membership instead, `reference/selfexplore-method.md` §9.7); when every candidate does, the pair is
dropped (`chosen_through_pit`).

(`explore.pair_format: next_step` cuts the chosen to its first step when `dpo-step` reads the pairs: Step-DPO's.)

Prefix M is the whole rejected solution: never probed, its value is 0 (its own grade). Search strategies
(`PitSearch`): `linear` probes 1, 2, ... and stops at the first pit (the paper's; no 20-step cap); `binary`
bisects between the last positive and the first zero value (OmegaPRM), so the step before its pit is always
probed and positive; it agrees with `linear` whenever the values fall to zero once. Every probe's value is kept in
`step_values.jsonl` (process-reward labels, Math-Shepherd style).

Prefixes live in token space: a rejected solution is the token ids the model sampled, cut at step boundaries, so
a probe continues exactly the tokens the model produced (re-tokenising a text prefix gives other tokens with BPE
and SentencePiece tokenisers). A step end inside a token moves to the end of that token, so a prefix always
holds its last step whole, newline included (`step_cuts`). All probes of one rejected solution run on the same
engine (one Ray Data row), so the engine's prefix cache reuses their common prefix, and each engine call batches
the current probes of every solution in its batch: rounds of lockstep search.
Each probe is seeded by its solution and step alone.

Outputs in `explore/`: `probes/` (shards: per rejected solution: steps, probes, pit), `gpairs.jsonl`,
`step_values.jsonl`; the stage's metrics (pits, probes, pairs) are in its manifest. The driver holds one rejected
solution at a time: the items stream from the outcome pairs (`select/pairs.jsonl`, `rft-greedy/pairs.jsonl` or
`rft-sample/pairs.jsonl`: `select.rejected_from`) to the engines' input files and, once explored, back from the
shards with their results.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator

from selfexplore.config import ExploreConfig, RunConfig
from selfexplore.engines import SamplingParams, derive_seed
from selfexplore.errors import StageError
from selfexplore.io import atomic_open, iter_jsonl, json_line
from selfexplore.rollout import EngineWorker, iter_results, rollout_nodes, run_rollout
from selfexplore.run_dir import PROBES, STEP_PAIRS, STEP_VALUES, RunDir, outcome_pairs
from selfexplore.tasks import get_task


class PitSearch:
    """Which step prefix to probe next, for one rejected solution of `n_steps` steps, and the first pit found.

    Both strategies return a pit j whose value is 0 and whose previous step's value is > 0 (or j = 1: the bare
    question counts as solvable, as the outcome pair's chosen shows). `linear` probes 1, 2, ... and returns the
    first step with value 0. `binary` bisects: with a step `hi` of value 0 (the last step, which `explore` knows
    without a probe, or else probed first) and `lo` the last step before it known to be positive (0: the
    question), it probes the middle of (lo, hi] until hi = lo + 1.

    A true value never rises after reaching 0 (prefix j+1 is one of the continuations of prefix j), so true
    values have one pit and both strategies find it. Estimates from k samples can rise again ([0, 2, 0, 0]: the
    zero at step 1 was a miss); then `binary` returns a pit with a positive previous step, not always the first
    one (here 3, where `linear` says 1). When the last step's value is > 0 there is nothing to bisect on and
    `binary` scans like `linear`.
    """

    def __init__(self, n_steps: int, strategy: str):
        self.n_steps, self.strategy = n_steps, strategy
        self.values: dict[int, int] = {}  # step -> number of correct completions

    @property
    def pit(self) -> int | None:
        bracket = self._bracket()
        return bracket[1] if bracket and bracket[1] - bracket[0] == 1 else None

    def next_step(self) -> int | None:
        bracket = self._bracket()
        if bracket and bracket[1] - bracket[0] == 1:
            return None
        if self.strategy == "binary":
            if bracket:
                return (bracket[0] + bracket[1]) // 2
            if self.n_steps > 0 and self.n_steps not in self.values:
                return self.n_steps
        return next((j for j in range(1, self.n_steps + 1) if j not in self.values), None)

    def record(self, step: int, n_correct: int) -> None:
        self.values[step] = n_correct

    def _bracket(self) -> tuple[int, int] | None:
        """(lo, hi): hi is the first step known to have value 0, lo the last step before it known to be positive
        (0 if none). No step strictly between them has a value yet. None while no value 0 is known."""
        hi = min((j for j, v in self.values.items() if v == 0), default=None)
        if hi is None:
            return None
        return max((j for j, v in self.values.items() if j < hi), default=0), hi


def step_cuts(tokenizer, token_ids: list[int], spans: list[tuple[int, int]]) -> list[int]:
    """For each step, the number of tokens of the prefix that ends with it: the fewest tokens whose text holds the
    step through its newline(s), or through its last visible character when the step ends with spaces only (a
    sentence of a MATH paragraph). A token that straddles the step's end goes with the step: cut before it, the
    prefix would stop inside the step (`= 1` of `= 12\n`) and a probe could complete the step into another one.
    Found by bisection: decoded length grows with the number of tokens.
    """
    text = tokenizer.decode(token_ids, skip_special_tokens=True)

    def text_length(n_tokens: int) -> int:
        return len(tokenizer.decode(token_ids[:n_tokens], skip_special_tokens=True))

    cuts, low = [], 0
    for start, end in spans:
        need = start + len(text[start:end].rstrip(" \t"))
        high = len(token_ids)
        while low < high:
            mid = (low + high) // 2
            if text_length(mid) >= need:
                high = mid
            else:
                low = mid + 1
        cuts.append(low)
    return cuts


def explore_rejected(items: list[dict], engine, task, cfg: ExploreConfig) -> list[dict]:
    """Run the pit search of every item (a rejected solution) in lockstep rounds of batched engine calls."""
    tokenizer = engine.tokenizer
    solutions = [tokenizer.decode(item["rejected_token_ids"], skip_special_tokens=True) for item in items]
    cuts = [step_cuts(tokenizer, item["rejected_token_ids"], task.split_steps(text)) for item, text in zip(items, solutions)]
    prompt_ids = [engine.encode(item["prompt"]) for item in items]
    # prefix_texts[i][j]: the text of the first j steps' tokens (j = 0: empty)
    prefix_texts = [
        [""] + [tokenizer.decode(item["rejected_token_ids"][:cut], skip_special_tokens=True) for cut in item_cuts]
        for item, item_cuts in zip(items, cuts)
    ]
    searches = [PitSearch(len(c), cfg.strategy) for c in cuts]
    for search, item_cuts in zip(searches, cuts):
        # A prefix holding the whole solution is never probed: its value is the solution's grade, 0 (it is a
        # rejected one), while a probe would grade it plus whatever follows (`The answer is 1` + `2`).
        for j, cut in enumerate(item_cuts, 1):
            if cut == item_cuts[-1]:
                search.record(j, 0)
    probes: list[dict[int, list[dict]]] = [{} for _ in items]
    while requests := [(i, j) for i, search in enumerate(searches) if (j := search.next_step()) is not None]:
        outputs = engine.generate(
            [prompt_ids[i] + items[i]["rejected_token_ids"][: cuts[i][j - 1]] for i, j in requests],
            [
                SamplingParams(
                    n=cfg.k,
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    max_tokens=cfg.max_tokens,
                    seed=derive_seed(cfg.seed, "explore", items[i]["key"], j),
                )
                for i, j in requests
            ],
        )
        for (i, j), completions in zip(requests, outputs):
            # Grade the whole solution (prefix + completion): the answer may already stand in the prefix.
            prefix = prefix_texts[i][j]
            graded = [{"text": c.text, "n_tokens": c.n_tokens, "correct": task.grade(prefix + c.text, items[i]["answer"])} for c in completions]
            probes[i][j] = graded
            searches[i].record(j, sum(g["correct"] for g in graded))
    return [
        {
            "key": item["key"],
            "id": item["id"],
            "rejected_idx": item["rejected_idx"],
            # Step j's text as the tokens cut it: the DPO pair's rejected step, and its prompt's tail.
            "steps": [texts[j][len(texts[j - 1]) :] for j in range(1, len(texts))],
            "cuts": cuts[i],
            "probes": [{"step": j, "completions": probes[i][j]} for j in sorted(probes[i])],
            "pit": searches[i].pit,
        }
        for i, (item, texts) in enumerate(zip(items, prefix_texts))
    ]


class ExploreWorker(EngineWorker):
    def process(self, items: list[dict]) -> list[dict]:
        return explore_rejected(items, self.engine, self.task, self.settings["explore_cfg"])


def rejected_items(pairs: Iterable[dict], answers: dict[str, str], limit: int = 0) -> Iterator[dict]:
    """One exploration item per outcome pair (each rejected solution is used by one pair only), one at a time."""
    per_problem: dict[str, int] = {}
    for pair in itertools.islice(pairs, limit or None):
        idx = per_problem[pair["id"]] = per_problem.get(pair["id"], -1) + 1
        yield {
            "key": f"{pair['id']}/{idx}",
            "id": pair["id"],
            "rejected_idx": idx,
            "prompt": pair["prompt"],
            "chosen": pair["chosen"],
            "rejected_token_ids": pair["rejected_token_ids"],
            "answer": answers[pair["id"]],
        }


def pit_summary(result: dict) -> dict:
    """What pairing and the step values need of one explored solution: a few strings, not every completion."""
    pit = result["pit"]
    before = [p for p in result["probes"] if pit is not None and p["step"] == pit - 1]
    return {
        "id": result["id"],
        "rejected_idx": result["rejected_idx"],
        "pit": pit,
        "values": [[p["step"], sum(c["correct"] for c in p["completions"])] for p in result["probes"]],
        "generated_tokens": sum(c["n_tokens"] for p in result["probes"] for c in p["completions"]),
        "steps_before_pit": "".join(result["steps"][: pit - 1]) if pit is not None else None,
        "pit_step": result["steps"][pit - 1] if pit is not None else None,
        # correct completions from the prefix before the pit, shortest first: the step pair's chosen
        "candidates": sorted((c["text"] for p in before for c in p["completions"] if c["correct"]), key=len),
    }


class StepPairs:
    """Step pairs from the pits, one explored solution at a time; per problem, no chosen is used twice and no
    (prompt, rejected) repeats, and no chosen begins with its rejected step. It remembers a digest of what the pairs
    used, not their text (hundreds of MB at paper scale)."""

    def __init__(self, task):
        self.task = task
        self.used: set[bytes] = set()
        self.dropped = {"no_pit": 0, "chosen_through_pit": 0, "no_chosen": 0, "duplicate": 0, "empty_step": 0}

    def add(self, item: dict, summary: dict) -> dict | None:
        """The step pair of one explored solution, or None (counted in `dropped` by why)."""
        pit = summary["pit"]
        if pit is None:  # only an empty solution: the whole solution is wrong, so its last step at the latest is a pit
            self.dropped["no_pit"] += 1
            return None
        prompt = item["prompt"] + summary["steps_before_pit"]
        rejected = summary["pit_step"]
        if not rejected.strip():  # two step ends inside one token: the pit step has no tokens of its own
            self.dropped["empty_step"] += 1
            return None
        candidates = [item["chosen"]] if pit == 1 else summary["candidates"]
        candidates = [c for c in candidates if not self._begins_with(c, rejected)]
        if not candidates:
            self.dropped["chosen_through_pit"] += 1
            return None
        candidates = [c for c in candidates if _digest("chosen", item["id"], c) not in self.used]
        if not candidates:
            self.dropped["no_chosen"] += 1
            return None
        if _digest("rejected", item["id"], prompt, rejected) in self.used:
            self.dropped["duplicate"] += 1
            return None
        self.used.update({_digest("chosen", item["id"], candidates[0]), _digest("rejected", item["id"], prompt, rejected)})
        return {"prompt": prompt, "chosen": candidates[0], "rejected": rejected, "id": item["id"], "kind": "step", "pit_step": pit}

    def _begins_with(self, candidate: str, step: str) -> bool:
        """`candidate`'s first step is `step`; or its text starts with `step`'s, which can hold the first characters
        of the next step too when a token straddles the step's end (`step_cuts`)."""
        (_, end), *_ = self.task.split_steps(candidate)
        return candidate[:end].strip() == step.strip() or candidate.startswith(step)


def _digest(*parts: str) -> bytes:
    return hashlib.blake2b(json.dumps(parts).encode(), digest_size=16).digest()


def step_value_rows(summary: dict, k: int) -> list[dict]:
    """The Monte-Carlo value of each probed step of one explored solution (a process-reward label)."""
    return [
        {"id": summary["id"], "rejected_idx": summary["rejected_idx"], "step": step, "k": k, "n_correct": n_correct}
        for step, n_correct in summary["values"]
    ]


def run(cfg: RunConfig, run_dir: RunDir) -> dict:
    task = get_task(cfg.task.name)
    answers = {p["id"]: p["answer"] for p in task.load("train", cfg.task)}

    def items() -> Iterator[dict]:  # read from the outcome pairs each time, so they are never all in memory
        return rejected_items(iter_jsonl(run_dir.path(outcome_pairs(cfg))), answers, cfg.explore.max_rejected)

    worker_kwargs = dict(model_dir=run_dir.model_dir("rft"), engine_cfg=cfg.engine, task_name=cfg.task.name, explore_cfg=cfg.explore)
    run_rollout(items(), ExploreWorker, worker_kwargs, cfg.engine, run_dir.path(PROBES), key="key", what="rejected solutions explored")
    # The sealed shards hold the results in item order: one item and its explored solution in memory at a time.
    step_pairs, pits = StepPairs(task), collections.Counter()
    n_rejected = n_pairs = n_probes = generated_tokens = 0
    with atomic_open(run_dir.path(STEP_PAIRS)) as pairs_out, atomic_open(run_dir.path(STEP_VALUES)) as values_out:
        for item, result in zip(items(), iter_results(run_dir.path(PROBES)), strict=True):
            if result["key"] != item["key"]:  # `run_rollout` checked the rows' number; this, their order
                raise StageError(f"{run_dir.path(PROBES)}: {result['key']} where {item['key']} should be; delete it and rerun")
            summary = pit_summary(result)
            if (pair := step_pairs.add(item, summary)) is not None:
                pairs_out.write(json_line(pair))
                n_pairs += 1
            for row in step_value_rows(summary, cfg.explore.k):
                values_out.write(json_line(row))
                n_probes += 1
            n_rejected += 1
            generated_tokens += summary["generated_tokens"]
            if summary["pit"] is not None:
                pits[summary["pit"]] += 1
    return {
        "rejected": n_rejected,
        "step_pairs": n_pairs,
        "dropped": step_pairs.dropped,
        "probes": n_probes,
        "probes_per_rejected": n_probes / max(1, n_rejected),
        "generated_tokens_per_rejected": generated_tokens / max(1, n_rejected),
        "pit_histogram": {str(j): pits[j] for j in sorted(pits)},
        "nodes": rollout_nodes(run_dir.path(PROBES)),
    }
