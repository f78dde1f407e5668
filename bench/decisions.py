"""Where DPO would have to act on arith, and how far it moves there.

    OMP_NUM_THREADS=2 python bench/decisions.py runs/method-confirm/seed-{0,1,2}    # the config's three seeds
    python bench/decisions.py runs/tiny                            # the demo's run

A greedy solution goes wrong at one character: the first character of its first wrong step that differs from the
right step (`v op n = r`, `The answer is v`), usually a digit of the step's result. For each problem of the run's
validation and test sets that the RFT model solves wrongly, this reads off, at that character and with RFT's own
prefix, the probability of the right character and of the one RFT wrote, under RFT and under each DPO model
(`dpo-outcome`, `dpo-step`, trained from RFT): is the right answer a near miss, how far DPO moved it, and how many
of these decisions it turned (the right character now the likelier). The same at the first character where each
training pair's chosen and rejected responses part, with the chosen's character in the place of the right one (it
is not checked against the truth): how far DPO moved the decisions it was trained on, and how often RFT already
preferred the chosen character there.

Writes `bench/results/decisions.json`.
"""

from __future__ import annotations

import argparse
import os
import statistics

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selfexplore.io import read_jsonl
from selfexplore.run_dir import OUTCOME_PAIRS, STEP_PAIRS, Artifact, RunDir
from selfexplore.tasks import format_prompt
from selfexplore.tasks.arith import APPLY, first_wrong_step, operations, split_steps

from record import write_report  # bench/record.py

DPO_MODELS = ("dpo-outcome", "dpo-step")
SPLITS = ("validation", "test")


def right_steps(question: str, step: int) -> list[str]:
    """The right texts of 1-based `step` of a solution to `question` (both operand orders for + and *)."""
    value, ops = operations(question)
    for op, operand in ops[: step - 1]:
        value = APPLY[op](value, operand)
    if step > len(ops):
        return [f"The answer is {value}"]
    op, operand = ops[step - 1]
    result = APPLY[op](value, operand)
    forms = [f"{value} {op} {operand} = {result}"]
    return forms + ([f"{operand} {op} {value} = {result}"] if op != "-" else [])


def parting(a: str, b: str) -> int | None:
    """The index of the first character where `a` and `b` differ (the shorter one's end counts), or None if equal."""
    return None if a == b else len(os.path.commonprefix([a, b]))


def greedy_errors(run: RunDir) -> tuple[list[dict], int]:
    """For each validation and test problem RFT's greedy solution gets wrong: the prefix up to its first wrong
    character, the right character and the one RFT wrote (None: the end of the sequence), and whether it lies in an
    equation's result (a digit, or the result's end). Also the number of problems evaluated."""
    points, problems = [], 0
    for split in SPLITS:
        for row in read_jsonl(run.eval_results("rft", split)):
            problems += 1
            text = row["completion"]
            step = first_wrong_step(row["question"], text)
            if row["correct"] or step is None:
                continue
            start, end = split_steps(text)[step - 1]
            stated = text[start:end].rstrip("\n")
            indent = len(stated) - len(stated.lstrip())
            stated = stated.strip()
            right = max(right_steps(row["question"], step), key=lambda form: parting(form, stated))  # wrong, so they part
            at = parting(right, stated)
            cut = start + indent + at
            points.append({
                "prefix": format_prompt(row["question"]) + text[:cut],
                # After a right equation comes a newline; after the answer line, the end of the sequence.
                "right": right[at] if at < len(right) else ("\n" if "=" in right else None),
                "stated": text[cut] if cut < len(text) else None,  # None: the completion ended there
                "in_result": "=" in right[:at],
            })
    return points, problems


def pair_partings(run: RunDir, pairs_file: Artifact, whole_responses: bool) -> tuple[list[dict], int]:
    """Each training pair's first parting character (prefix, the chosen's character as `right`, the rejected's as
    `stated`; None: the end of the sequence), and the number of pairs. `whole_responses`: both responses are trained
    to end there (outcome pairs); a step pair's rejected response is one step, so where it is the chosen's
    beginning there is no parting character: the chosen completion passed through the rejected pit step itself."""
    pairs = read_jsonl(run.path(pairs_file))
    points = []
    for pair in pairs:
        chosen, rejected = pair["chosen"], pair["rejected"]
        at = parting(chosen, rejected)
        if at is None or (not whole_responses and at >= min(len(chosen), len(rejected))):
            continue
        points.append({"prefix": pair["prompt"] + chosen[:at], "right": chosen[at] if at < len(chosen) else None, "stated": rejected[at] if at < len(rejected) else None})
    return points, len(pairs)


@torch.inference_mode()
def probabilities(model, tokenizer, points: list[dict]) -> list[tuple[float, float]]:
    """(p(right character), p(stated character)) at each point's prefix; the tokenizer is character-level."""
    out = []
    for point in points:
        ids = tokenizer(point["prefix"], return_tensors="pt").input_ids
        probs = model(ids).logits[0, -1].float().softmax(-1)
        chars = (point["right"] or tokenizer.eos_token, point["stated"] or tokenizer.eos_token)
        out.append(tuple(probs[tokenizer.convert_tokens_to_ids(char)].item() for char in chars))
    return out


def movement(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> dict:
    """How a DPO model moved the decisions RFT made: mean change of p(right) with a 95% interval, the share raised,
    and how many decisions RFT got wrong it now gets right (and, where RFT was right, wrong; at greedy errors RFT's
    written character is its likeliest, so none was right)."""
    change = [a[0] - b[0] for b, a in zip(before, after)]
    mean = statistics.fmean(change)
    half = 1.96 * statistics.stdev(change) / len(change) ** 0.5
    wrong_before = [(b[0] < b[1]) for b in before]
    return {
        "p_right_change_mean": mean,
        "p_right_change_ci95": [mean - half, mean + half],
        "raised": sum(c > 0 for c in change) / len(change),
        "turned_right": sum(w and a[0] > a[1] for w, a in zip(wrong_before, after)),
        "turned_wrong": sum(not w and a[0] < a[1] for w, a in zip(wrong_before, after)),
    }


def measure(run_path: str) -> dict:
    """The three sets of decisions of one run (greedy errors, outcome pairs, step pairs), each under RFT and both DPO
    models."""
    run, _ = RunDir.open(run_path)
    tokenizer = AutoTokenizer.from_pretrained(run.model_dir("rft"))
    models = {name: AutoModelForCausalLM.from_pretrained(run.model_dir(name), dtype=torch.float32).eval() for name in ("rft", *DPO_MODELS)}
    # Each set: its points and how many problems (greedy errors) or pairs they came from.
    sets = {"greedy_errors": greedy_errors(run), "outcome_pairs": pair_partings(run, OUTCOME_PAIRS, True), "step_pairs": pair_partings(run, STEP_PAIRS, False)}
    report = {}
    for name, (points, out_of) in sets.items():
        probs = {model: probabilities(models[model], tokenizer, points) for model in models}
        p_right = [p[0] for p in probs["rft"]]
        entry = {
            "n": len(points),
            "out_of": out_of,
            "rft_p_right_median": statistics.median(p_right),
            "rft_p_stated_median": statistics.median(p[1] for p in probs["rft"]),
            "rft_prefers_right": sum(p[0] > p[1] for p in probs["rft"]) / len(points),
            "rft_p_right_below": {str(edge): sum(p < edge for p in p_right) / len(p_right) for edge in (0.01, 0.1, 0.3, 0.5)},
            **{model: movement(probs["rft"], probs[model]) for model in DPO_MODELS},
        }
        if name == "greedy_errors":
            entry["in_result"] = sum(p["in_result"] for p in points) / len(points)
        report[name] = entry
        print(f"{run_path} {name}: n={len(points)}, RFT p(right) median {entry['rft_p_right_median']:.3f}, "
              f"p(stated) median {entry['rft_p_stated_median']:.3f}, RFT prefers the right one at {entry['rft_prefers_right']:.1%}; " + "; ".join(
                  f"{m} p(right) {entry[m]['p_right_change_mean']:+.4f}, turned right {entry[m]['turned_right']}" for m in DPO_MODELS), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished arith run directories (each with rft, dpo-outcome, dpo-step and their evals)")
    parser.add_argument("--out", default="", help="where to write the JSON (default bench/results/decisions.json)")
    args = parser.parse_args()
    runs = {path: measure(path) for path in args.runs}
    write_report({"command": "python bench/decisions.py " + " ".join(args.runs), "runs": runs}, "decisions", args.out)


if __name__ == "__main__":
    main()
