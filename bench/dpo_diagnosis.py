"""Why DPO does not help on arith: step pairs with the true pits, and a random-noise control.

    python bench/dpo_diagnosis.py runs/tiny                                  # the demo's run, its DPO settings
    python bench/dpo_diagnosis.py runs/method/seed-{0,1,2} --lrs 3e-6,1e-5,3e-5   # bench/method.py's seeds, pooled

From finished arith runs (each: its RFT model, its outcome pairs and the explorer's step pairs), for each DPO
learning rate, three models per run, each evaluated on the run's validation and test problems:
- `explorer`: `dpo-step` on the run's own step pairs (the explorer's pits: Self-Explore as the pipeline runs it);
- `truth`: `dpo-step` on pairs from the same rejected solutions with labels that hold no noise: the pit is the true
  first wrong step (`selfexplore.tasks.arith.first_wrong_step`), the chosen is the gold solution from that step on;
- `noise`, one per DPO model: the RFT model plus Gaussian noise of that DPO model's change in norm, tensor by
  tensor. If the DPO model loses as much, its loss is the model's fragility; if not, DPO moved it somewhere worse.
Reported per model: accuracy per run, the paired difference to RFT pooled over the runs with its 95% interval (and
`truth` - `explorer`), the relative weight change, and the answers it changed (test problems RFT solves and it does
not, and the reverse), by the operation and the shift of the result at the first line where its completion leaves
RFT's. Per run and pair set: how many labels the truth
contradicts (a rejected step that is right: early pit; a prefix already wrong: late pit; a chosen with a wrong
step) and the rejected steps' arithmetic slips (stated result - right result, per operation).

Each model trains in a copy of the run under `--output-dir` (finished stages are skipped on a rerun), one at a time.
Writes `bench/results/dpo-diagnosis.json`.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections import Counter
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from selfexplore.config import RunConfig
from selfexplore.io import read_jsonl, write_jsonl
from selfexplore.run_dir import OUTCOME_PAIRS, STEP_PAIRS, RunDir
from selfexplore.stages.explore import rejected_items
from selfexplore.stats import paired_difference
from selfexplore.tasks import get_task
from selfexplore.tasks.arith import APPLY, EQUATION, first_wrong_step, split_steps

from record import selfexplore, write_report  # bench/record.py

WEIGHTS = "model.safetensors"


def truth_pairs(run_dir: RunDir, cfg: RunConfig) -> list[dict]:
    """Step pairs from the rejected solutions the explorer searched, labelled by the truth: prompt = question + the
    steps before the first wrong one, rejected = that step, chosen = the gold solution from that step on."""
    problems = {p["id"]: p for p in get_task("arith").load("train", cfg.task)}
    outcome = read_jsonl(run_dir.path(OUTCOME_PAIRS))
    items = list(rejected_items(outcome, {i: p["answer"] for i, p in problems.items()}, cfg.explore.max_rejected))
    pairs, seen = [], set()
    for item, pair in zip(items, outcome):  # one item per outcome pair, in order
        text = pair["rejected"]
        step = first_wrong_step(item["prompt"].partition("\n")[0], text)  # arith: the question is one line
        spans = split_steps(text)
        gold = problems[item["id"]]["solution"]
        gold_spans = split_steps(gold)
        if step is None or step > len(gold_spans):
            continue
        prefix = "".join(text[a:b] for a, b in spans[: step - 1])
        wrong = text[slice(*spans[step - 1])]
        if not wrong.strip() or (item["id"], prefix, wrong) in seen:
            continue
        seen.add((item["id"], prefix, wrong))
        chosen = gold[gold_spans[step - 1][0]:]
        pairs.append({"prompt": item["prompt"] + prefix, "chosen": chosen, "rejected": wrong, "id": item["id"], "kind": "step", "pit_step": step})
    return pairs


def label_quality(pairs: list[dict]) -> dict:
    """Labels the truth contradicts, and the rejected steps' arithmetic slips (`- +1`: a difference one too high)."""
    early = late = chosen_wrong = 0
    slips = Counter()
    for pair in pairs:
        question, _, prefix = pair["prompt"].partition("\n")
        late += bool(prefix) and first_wrong_step(question, prefix) is not None
        early += first_wrong_step(question, prefix + pair["rejected"]) is None
        chosen_wrong += first_wrong_step(question, prefix + pair["chosen"]) is not None
        equation = EQUATION.fullmatch(pair["rejected"].strip())
        if equation:
            a, op, b, stated = int(equation[1]), equation[2], int(equation[3]), int(equation[4])
            right = APPLY[op](a, b)
            slips[f"{op} {stated - right:+d}" if stated != right else f"{op} right result, wrong operand"] += 1
        else:
            slips["not an equation"] += 1
    n = max(1, len(pairs))
    return {
        "pairs": len(pairs),
        "rejected_step_right": early / n,
        "prefix_already_wrong": late / n,
        "chosen_with_a_wrong_step": chosen_wrong / n,
        "rejected_slips": dict(slips.most_common()),
    }


def changed_answers(before: list[dict], after: list[dict]) -> dict:
    """Problems one model solves and the other does not: the first line where the completions part, as
    `<op> <result shift>` when both lines are the same equation with another result."""
    counts = {"lost": Counter(), "won": Counter()}
    for a, b in zip(before, after):
        if a["correct"] == b["correct"]:
            continue
        lines = next(((x, y) for x, y in zip(a["completion"].splitlines(), b["completion"].splitlines()) if x != y), ("", ""))
        ea, eb = (EQUATION.fullmatch(line.strip()) for line in lines)
        same_equation = ea and eb and ea.groups()[:3] == eb.groups()[:3]
        counts["lost" if a["correct"] else "won"][f"{ea[2]} {int(eb[4]) - int(ea[4]):+d}" if same_equation else "other"] += 1
    return {kind: dict(c.most_common()) for kind, c in counts.items()}


def relative_change(model_dir: str, reference_dir: str) -> float:
    """Mean over tensors of |W - W_ref| / |W_ref|."""
    w, ref = load_file(f"{model_dir}/{WEIGHTS}"), load_file(f"{reference_dir}/{WEIGHTS}")
    return sum(((w[k].float() - ref[k].float()).norm() / ref[k].float().norm()).item() for k in ref) / len(ref)


def add_matched_noise(model_dir: str, reference_dir: str, seed: int) -> None:
    """Overwrite `model_dir`'s weights with the reference's plus Gaussian noise of the same norm, per tensor, as
    the difference between them. Saved in float32: rounded to bfloat16, most of a change this small would vanish."""
    w, ref = load_file(f"{model_dir}/{WEIGHTS}"), load_file(f"{reference_dir}/{WEIGHTS}")
    generator = torch.Generator().manual_seed(seed)
    noisy = {}
    for key, base in ref.items():
        noise = torch.randn(base.shape, generator=generator)
        scale = (w[key].float() - base.float()).norm() / noise.norm().clamp_min(1e-12)
        noisy[key] = (base.float() + noise * scale).contiguous()
    save_file(noisy, f"{model_dir}/{WEIGHTS}", metadata={"format": "pt"})


def copy_run(source: RunDir, output_dir: Path, name: str, drop: tuple[str, ...] = ()) -> RunDir:
    """A copy of `source` as `output_dir/name` (kept when it exists: a rerun skips what is done), without the stages
    in `drop`."""
    target = RunDir(output_dir / name, source.external_base_model)
    if not target.root.exists():
        shutil.copytree(source.root, target.root)
        for stage_name in drop:
            shutil.rmtree(target.stage_dir(stage_name), ignore_errors=True)
    return target


def summarise(per_run: list[dict], rft_rows: list[dict]) -> dict:
    """One model over the runs: accuracy per run, its paired difference to RFT pooled over runs, its weight change
    per run, the answers it changed (test, summed over runs)."""
    splits = ("validation", "test")
    changed = {"lost": Counter(), "won": Counter()}
    for model, rft in zip(per_run, rft_rows):
        for kind, counts in changed_answers(rft["test"], model["rows"]["test"]).items():
            changed[kind].update(counts)
    return {
        "accuracy": {split: [sum(r["correct"] for r in m["rows"][split]) / len(m["rows"][split]) for m in per_run] for split in splits},
        "minus_rft": {split: pooled(rft_rows, [m["rows"] for m in per_run], split) for split in splits},
        "relative_weight_change": [m["weight_change"] for m in per_run],
        "changed_answers": {kind: dict(c.most_common()) for kind, c in changed.items()},
        **({"dpo": [m["dpo"] for m in per_run]} if "dpo" in per_run[0] else {}),
    }


def pooled(a_rows: list[dict], b_rows: list[dict], split: str) -> dict:
    """b - a on the same problems, pooled over runs (stratified by run), and per run."""
    a = [[r["correct"] for r in rows[split]] for rows in a_rows]
    b = [[r["correct"] for r in rows[split]] for rows in b_rows]
    return {**paired_difference(a, b), "per_run": [(sum(y) - sum(x)) / len(x) for x, y in zip(a, b)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished arith run directories (several, e.g. seeds: differences pooled over them)")
    parser.add_argument("--lrs", default="", help="DPO learning rates, comma-separated (default: the first run's)")
    parser.add_argument("--output-dir", default="runs/dpo-diagnosis")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    sources = [RunDir.open(path) for path in args.runs]
    names = [Path(path).name for path in args.runs]
    if len(set(names)) != len(names):
        raise SystemExit(f"bench/dpo_diagnosis.py: the runs need different directory names (their copies are named after them): {names}")
    for path, (_, cfg) in zip(args.runs, sources):
        if cfg.task.name != "arith":
            raise SystemExit(f"bench/dpo_diagnosis.py: {path} is a {cfg.task.name} run; only arith steps can be checked")
    start = time.time()
    output_dir = Path(args.output_dir)
    lrs = args.lrs.split(",") if args.lrs else [str(sources[0][1].dpo.learning_rate)]
    rft_rows = [{split: read_jsonl(source.eval_results("rft", split)) for split in ("validation", "test")} for source, _ in sources]
    pair_sets = [{"explorer": read_jsonl(source.path(STEP_PAIRS)), "truth": truth_pairs(source, cfg)} for source, cfg in sources]
    retrain = ("dpo-step", "eval-dpo-step")

    models = {}  # variant -> one entry per run
    for lr in lrs:
        for labels in ("explorer", "truth"):
            variant = f"{labels}-lr{lr}"
            for (source, _), name, pairs, rft in zip(sources, names, pair_sets, rft_rows):
                run = copy_run(source, output_dir, f"{name}-{variant}", drop=retrain)
                write_jsonl(run.path(STEP_PAIRS), pairs[labels])
                overrides = [f"output_dir={output_dir}", f"name={run.root.name}", f"dpo.learning_rate={lr}"]
                for stage_name in retrain:
                    selfexplore("stage", stage_name, str(run.config), *overrides, bench="dpo_diagnosis")
                noise = copy_run(run, output_dir, f"{name}-noise-{variant}", drop=("eval-dpo-step",))
                if noise.manifest("eval-dpo-step") is None:  # not evaluated yet (same seed and norm: redoing it changes nothing)
                    add_matched_noise(noise.model_dir("dpo-step"), source.model_dir("rft"), seed=0)
                selfexplore(
                    "stage", "eval-dpo-step", str(noise.config), f"output_dir={output_dir}", f"name={noise.root.name}", f"dpo.learning_rate={lr}", bench="dpo_diagnosis"
                )
                metrics = run.manifest("dpo-step")["metrics"]
                for key, model_run in ((variant, run), (f"noise-{variant}", noise)):
                    entry = {
                        "rows": {split: read_jsonl(model_run.eval_results("dpo-step", split)) for split in rft},
                        "weight_change": relative_change(model_run.model_dir("dpo-step"), source.model_dir("rft")),
                    }
                    if model_run is run:
                        entry["dpo"] = {k: metrics[k] for k in ("examples", "final_loss", "rewards/margins", "rewards/chosen", "rewards/rejected") if k in metrics}
                    models.setdefault(key, []).append(entry)
                    test = paired_difference([[r["correct"] for r in rft["test"]]], [[r["correct"] for r in entry["rows"]["test"]]])
                    print(f"{name} {key}: test minus RFT {100 * test['mean']:+.1f} ({100 * test['ci95'][0]:+.1f} to {100 * test['ci95'][1]:+.1f}), weight change {entry['weight_change']:.2e}", flush=True)
    summaries = {variant: summarise(per_run, rft_rows) for variant, per_run in models.items()}
    truth_minus_explorer = {
        f"lr{lr}": {split: pooled([m["rows"] for m in models[f"explorer-lr{lr}"]], [m["rows"] for m in models[f"truth-lr{lr}"]], split) for split in ("validation", "test")}
        for lr in lrs
    }
    report = {
        "command": "python bench/dpo_diagnosis.py " + " ".join([*args.runs, *([f"--lrs {args.lrs}"] if args.lrs else [])]),
        "runs": args.runs,
        "wall_s": round(time.time() - start),
        "rft_accuracy": {split: [sum(r["correct"] for r in rows[split]) / len(rows[split]) for rows in rft_rows] for split in ("validation", "test")},
        "pair_labels": [{labels: label_quality(pairs) for labels, pairs in sets.items()} for sets in pair_sets],
        "models": summaries,
        "truth_minus_explorer": truth_minus_explorer,
    }
    write_report(report, "dpo-diagnosis", args.out)
    for variant, summary in summaries.items():
        test = summary["minus_rft"]["test"]
        print(f"{variant}: test minus RFT {100 * test['mean']:+.1f} ({100 * test['ci95'][0]:+.1f} to {100 * test['ci95'][1]:+.1f}) pooled over {len(sources)} runs")


if __name__ == "__main__":
    main()
