"""`report.md` of a run: the accuracy of every evaluated model, and what sampling and exploration found.

Written at the end of `selfexplore run`, and again by `selfexplore eval --run RUN_DIR`. Reads only manifests
and eval summaries, so it works on any run directory, wherever it was moved.
"""

from __future__ import annotations

from selfexplore.config import RunConfig
from selfexplore.io import atomic_write, read_json
from selfexplore.run_dir import MODEL_TITLES, STAGES, TRAINED_MODELS, RunDir


def write_report(run_dir: RunDir, cfg: RunConfig, wall_s: float | None = None) -> str:
    lines = [
        f"# selfexplore run `{run_dir.root.name}`",
        "",
        f"Task `{cfg.task.name}`, model `{cfg.model.path or 'tiny (built from scratch)'}`, greedy decoding on the test set.",
        "",
        "| model | accuracy | 95% CI | correct / n |",
        "|---|---|---|---|",
    ]
    for name in TRAINED_MODELS:
        if not run_dir.eval_summary(name).is_file():
            continue
        s = read_json(run_dir.eval_summary(name))
        lo, hi = s["ci95"]
        lines.append(f"| {MODEL_TITLES[name]} | {100 * s['accuracy']:.1f}% | {100 * lo:.1f}–{100 * hi:.1f}% | {s['correct']} / {s['n']} |")
    metrics = {name: m["metrics"] for name in STAGES if (m := run_dir.manifest(name))}
    lines.append("")
    if "sample" in metrics and "select" in metrics:
        sampled, selected = metrics["sample"], metrics["select"]
        lines.append(
            f"Sampling: {sampled['sample_accuracy']:.1%} of {sampled['samples']} samples correct, "
            f"pass@{cfg.sample.n} {sampled['pass_at_n']:.1%}; {selected['rft_rows']} RFT rows, "
            f"{selected['outcome_pairs']} outcome pairs."
        )
    if "explore" in metrics:
        explored = metrics["explore"]
        lines.append(
            f"Exploration: {explored['rejected']} rejected solutions, {explored['probes']} probes "
            f"(k={cfg.explore.k}, {cfg.explore.strategy}), first pits at steps {explored['pit_histogram']}, "
            f"{explored['step_pairs']} step pairs."
        )
    walls = {name: m["wall_s"] for name in STAGES if (m := run_dir.manifest(name))}
    this_run = f" (this invocation {wall_s:.0f}s)" if wall_s is not None else ""
    lines += ["", "Stage wall times: " + ", ".join(f"{n} {w:.0f}s" for n, w in walls.items()) + this_run + ".", ""]
    report = "\n".join(lines)
    atomic_write(run_dir.report, report)
    return report
