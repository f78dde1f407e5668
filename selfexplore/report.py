"""`report.md` of a run: the accuracy of every evaluated model, what sampling and exploration found, and figures.

Written at the end of `selfexplore run`, and again by `selfexplore eval --run RUN_DIR`. Reads only what the run
directory holds (manifests, eval summaries, samples, step values, training metrics), so it works on any run
directory, wherever it was moved. The figures are PNGs under `report/`, linked relatively from `report.md`;
each one is drawn when its data is there.
"""

from __future__ import annotations

import math
from pathlib import Path

from selfexplore import figures
from selfexplore.config import RunConfig
from selfexplore.io import atomic_write, read_json, read_jsonl
from selfexplore.rollout import iter_results
from selfexplore.run_dir import MODEL_TITLES, ON_POLICY_PAIRS, RFT_SAMPLE_PAIRS, SAMPLES, STAGES, STEP_VALUES, TRAINED_MODELS, RunDir, outcome_pairs
from selfexplore.stats import paired_difference
from selfexplore.tasks.arith import solved_by_right_steps


def write_report(run_dir: RunDir, cfg: RunConfig, wall_s: float | None = None) -> str:
    """Write `report.md` and its figures; return the report's text (what the terminal shows)."""
    text = report_text(run_dir, cfg, wall_s)
    drawn = draw_figures(run_dir, cfg)
    links = [f"![{title}]({path.relative_to(run_dir.root).as_posix()})" for title, path in drawn]
    atomic_write(run_dir.report, text + ("\n## Figures\n\n" + "\n\n".join(links) + "\n" if links else ""))
    return text


def report_text(run_dir: RunDir, cfg: RunConfig, wall_s: float | None) -> str:
    lines = [
        f"# selfexplore run `{run_dir.root.name}`",
        "",
        f"Task `{cfg.task.name}`, model `{cfg.model.path or 'tiny (built from scratch)'}`, greedy decoding. Test: "
        "evaluated once per model, reported; validation: what settings are tuned on.",
        "",
    ]
    # arith steps can be checked: how many test problems each model solves with every step right, not by luck.
    checked = cfg.task.name == "arith"
    lines += [
        "| model | test accuracy | 95% CI | correct / n | validation |" + (" test, every step right |" if checked else ""),
        "|---|---|---|---|---|" + ("---|" if checked else ""),
    ]
    for name, s in evaluated(run_dir):
        lo, hi = s["ci95"]
        validation = run_dir.eval_summary(name, "validation")
        on_validation = f"{100 * read_json(validation)['accuracy']:.1f}%" if validation.is_file() else "–"
        row = f"| {MODEL_TITLES[name]} | {100 * s['accuracy']:.1f}% | {100 * lo:.1f}–{100 * hi:.1f}% | {s['correct']} / {s['n']} | {on_validation} |"
        if checked:
            right = [solved_by_right_steps(r["question"], r["completion"], r["answer"]) for r in read_jsonl(run_dir.eval_results(name))]
            row += f" {100 * sum(right) / len(right):.1f}% |"
        lines.append(row)
    lines += paired_lines(run_dir, [name for name, _ in evaluated(run_dir)])
    metrics = {name: m["metrics"] for name in STAGES if (m := run_dir.manifest(name))}
    lines.append("")
    if "sample" in metrics and "select" in metrics:
        sampled, selected = metrics["sample"], metrics["select"]
        lines.append(
            f"Sampling: {sampled['sample_accuracy']:.1%} of {sampled['samples']} samples correct, "
            f"pass@{cfg.sample.n} {sampled['pass_at_n']:.1%}; {selected['rft_rows']} RFT rows, "
            f"{selected['outcome_pairs']} outcome pairs."
        )
    if "rft-greedy" in metrics and outcome_pairs(cfg) == ON_POLICY_PAIRS:
        greedy = metrics["rft-greedy"]
        lines.append(
            f"On-policy outcome pairs (`select.rejected_from: rft_greedy`): RFT solved {greedy['greedy_accuracy']:.1%} of "
            f"{greedy['problems']} training problems greedily; {greedy['outcome_pairs']} pairs of its wrong solutions, the ones explored and trained on."
        )
    if "rft-sample" in metrics and outcome_pairs(cfg) == RFT_SAMPLE_PAIRS:
        sampled = metrics["rft-sample"]
        lines.append(
            f"On-policy outcome pairs (`select.rejected_from: rft_samples`): {sampled['sample_accuracy']:.1%} of "
            f"{sampled['samples']} samples of the RFT model correct, pass@{cfg.sample.n} {sampled['pass_at_n']:.1%}; "
            f"{sampled['outcome_pairs']} pairs of its own samples, the ones explored and trained on."
        )
    if "explore" in metrics:
        explored = metrics["explore"]
        unpaired = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in explored.get("dropped", {}).items() if n)
        lines.append(
            f"Exploration: {explored['rejected']} rejected solutions, {explored['probes']} probes "
            f"(k={cfg.explore.k}, {cfg.explore.strategy}), first pits at steps {explored['pit_histogram']}, "
            f"{explored['step_pairs']} step pairs" + (f" (not paired: {unpaired})." if unpaired else ".")
        )
    walls = {name: m["wall_s"] for name in STAGES if (m := run_dir.manifest(name))}
    this_run = f" (this invocation {wall_s:.0f}s)" if wall_s is not None else ""
    lines += ["", "Stage wall times: " + ", ".join(f"{n} {w:.0f}s" for n, w in walls.items()) + this_run + "."]
    # Another machine trains another model from the same run and seed (`train.worker.hardware`): say which this was.
    hardware = sorted({kind for m in metrics.values() for kind in m.get("hardware", [])})
    if hardware:
        lines.append("Trained on: " + "; ".join(hardware) + ".")
    lines.append("")
    return "\n".join(lines)


def paired_lines(run_dir: RunDir, models: list[str]) -> list[str]:
    """Each later row minus each earlier one on the same test problems, with a paired bootstrap 95% interval: the
    rows' own intervals overlap far more than their difference is uncertain."""
    if len(models) < 2:
        return []
    correct = {name: [row["correct"] for row in read_jsonl(run_dir.eval_results(name))] for name in models}
    lines = ["", "| paired difference (test) | points | 95% CI | only the first / only the second solved |", "|---|---|---|---|"]
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            d = paired_difference([correct[a]], [correct[b]])
            lo, hi = d["ci95"]
            lines.append(
                f"| {MODEL_TITLES[b]} − {MODEL_TITLES[a]} | {100 * d['mean']:+.1f} | {100 * lo:+.1f} to {100 * hi:+.1f} | {d['only_a']} / {d['only_b']} |"
            )
    return lines


def evaluated(run_dir: RunDir) -> list[tuple[str, dict]]:
    """(model stage, eval summary) of every evaluated model, in pipeline order."""
    return [(name, read_json(run_dir.eval_summary(name))) for name in TRAINED_MODELS if run_dir.eval_summary(name).is_file()]


def draw_figures(run_dir: RunDir, cfg: RunConfig) -> list[tuple[str, Path]]:
    """Every figure whose data the run holds, as (title, PNG path)."""
    assets = run_dir.report_assets
    drawn = []
    if models := evaluated(run_dir):
        drawn.append(("Test accuracy per model", figures.accuracy([(MODEL_TITLES[n], s) for n, s in models], assets / "accuracy.png")))
    if run_dir.manifest("sample") and (counts := sample_counts(run_dir)):
        png = figures.pass_at_k(pass_at_k(counts), len(counts), cfg.sample.temperature, assets / "pass_at_k.png")
        drawn.append(("pass@k of sampling", png))
    if explore := run_dir.manifest("explore"):
        histogram = {int(step): count for step, count in explore["metrics"]["pit_histogram"].items()}
        if histogram:
            png = figures.first_pits(histogram, explore["metrics"]["rejected"], cfg.explore.strategy, cfg.explore.k, assets / "first_pits.png")
            drawn.append(("First-pit histogram", png))
        if values := read_jsonl(run_dir.path(STEP_VALUES)):
            drawn.append(("Monte-Carlo value of probed steps", figures.step_values(values, assets / "step_values.png")))
    curves = {MODEL_TITLES[s]: read_jsonl(m) for s in ("dpo-outcome", "dpo-step") if (m := run_dir.train_logs(s).metrics).is_file()}
    if any(curves.values()):
        drawn.append(("DPO training curves", figures.dpo_curves(curves, cfg.dpo.beta, assets / "dpo_training.png")))
    return drawn


def sample_counts(run_dir: RunDir) -> list[tuple[int, int]]:
    """(samples, correct samples) of every sampled problem, one problem in memory at a time."""
    return [(len(r["samples"]), sum(s["correct"] for s in r["samples"])) for r in iter_results(run_dir.path(SAMPLES))]


def pass_at_k(counts: list[tuple[int, int]]) -> list[float]:
    """The unbiased pass@k estimator (Chen et al., 2021) for k = 1..n, averaged over problems: for a problem with c
    of its n samples correct, 1 - C(n - c, k) / C(n, k)."""
    n = min(samples for samples, _ in counts)
    return [sum(1 - math.comb(m - c, k) / math.comb(m, k) for m, c in counts) / len(counts) for k in range(1, n + 1)]
