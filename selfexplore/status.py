"""Where a run stands, stage by stage, without starting anything: `selfexplore status RUN_DIR [key=value ...]`.

A stage is *done* when its manifest holds the fingerprint that the config gives it now (the run's `config.yaml`
with the overrides, if any: "what would `dpo.beta=0.2` redo?"), *stale* when its manifest or its cut-off work was
made under another config (a run redoes it), *partial* when it started under the current config and was cut off
(a run resumes it: rollouts from their shards, training from its last checkpoint), else *not started*.
`key_figure` is also the figure the pipeline prints when a stage ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfexplore.config import RunConfig
from selfexplore.io import read_json, read_jsonl
from selfexplore.rollout import iter_results
from selfexplore.run_dir import MODEL_TITLES, TRAINED_MODELS, RunDir, pipeline_stages, stage_fingerprint
from selfexplore.stages import select


@dataclass(frozen=True)
class StageStatus:
    name: str
    state: str
    """done, stale, partial or not started"""
    wall_s: float | None
    figure: str
    """The key figure of a finished stage, or how far a cut-off one got."""


def stage_status(run_dir: RunDir, cfg: RunConfig, name: str) -> StageStatus:
    fingerprint = stage_fingerprint(cfg, name)
    manifest = run_dir.manifest(name)
    if manifest:
        state = "done" if manifest["fingerprint"] == fingerprint else "stale"
        return StageStatus(name, state, manifest["wall_s"], key_figure(name, manifest["metrics"]))
    started = run_dir.started(name)
    if not started:
        return StageStatus(name, "not started", None, "")
    if started["fingerprint"] != fingerprint:
        return StageStatus(name, "stale", None, "cut off under another config")
    return StageStatus(name, "partial", None, partial_progress(run_dir, name))


def partial_progress(run_dir: RunDir, name: str) -> str:
    """How far a cut-off stage got: rows in its shards (rollouts), sample shards paired (select), or its last logged
    step (training)."""
    shards = run_dir.shards(name)
    if shards is not None:
        done = f"{sum(1 for _ in iter_results(shards))} rows done"
        return done + (f", {paired_shards(run_dir, name)}" if name == "rft-sample" else "")
    if name == "select":
        return paired_shards(run_dir, name)
    if name in TRAINED_MODELS and (metrics := run_dir.train_logs(name).metrics).is_file():
        logged = read_jsonl(metrics)
        return f"trained to step {logged[-1]['step']} (last logged)" if logged else ""
    return ""


def paired_shards(run_dir: RunDir, name: str) -> str:
    paired = select.paired_shards(run_dir, name)
    return f"{paired} sample shard{'s' * (paired != 1)} paired"


def key_figure(name: str, metrics: dict) -> str:
    """A stage's result in a few words, from its manifest's metrics."""
    if name.startswith("eval-"):
        return accuracies(metrics)
    if name in TRAINED_MODELS:
        figure = f"{metrics['steps']} step{'s' * (metrics['steps'] != 1)}, loss {metrics['first_loss']:.3f} → {metrics['final_loss']:.3f}"
        if "rewards/accuracies" in metrics:
            figure += f", reward accuracy {metrics['rewards/accuracies']:.0%}, margin {metrics['rewards/margins']:.3f}"
        return figure
    if name == "base":
        return f"tiny model, {metrics['parameters'] / 1e6:.2f}M parameters" if "parameters" in metrics else f"model {metrics['model']}"
    if name == "sample":
        n = metrics["samples"] // max(1, metrics["problems"])
        return f"{metrics['sample_accuracy']:.1%} of {metrics['samples']} samples correct, pass@{n} {metrics['pass_at_n']:.1%}"
    if name == "select":
        return f"{metrics['rft_rows']} RFT rows, {metrics['outcome_pairs']} outcome pairs"
    if name == "rft-greedy":
        return f"RFT greedy on {metrics['problems']} training problems: {metrics['greedy_accuracy']:.1%} correct, {metrics['outcome_pairs']} outcome pairs"
    if name == "rft-sample":
        return f"{metrics['sample_accuracy']:.1%} of {metrics['samples']} RFT samples correct, {metrics['outcome_pairs']} outcome pairs"
    assert name == "explore", name
    return f"{metrics['rejected']} rejected solutions, {metrics['probes']} probes, {metrics['step_pairs']} step pairs"


def accuracies(summaries: dict[str, dict]) -> str:
    """A model's accuracy per split, from its eval summaries (or an eval stage's metrics: the same, per split)."""
    splits = [split for split in ("validation", "test") if split in summaries]
    return ", ".join(f"{split} {summaries[split]['accuracy']:.1%} ({summaries[split]['correct']}/{summaries[split]['n']})" for split in splits)


def format_status(run_dir: RunDir, cfg: RunConfig) -> str:
    rows = [stage_status(run_dir, cfg, name) for name in pipeline_stages(cfg)]
    width = max(len(row.name) for row in rows)
    lines = [f"run `{cfg.name}` in {run_dir.root} (task {cfg.task.name})", "", f"{'stage':<{width}}  {'state':<11}  {'wall':>6}  key figure"]
    for row in rows:
        wall = f"{row.wall_s:.0f}s" if row.wall_s is not None else "-"
        lines.append(f"{row.name:<{width}}  {row.state:<11}  {wall:>6}  {row.figure}".rstrip())
    best = run_dir.best_model()
    if best:
        figure = accuracies({split: read_json(run_dir.eval_summary(best, split)) for split in ("validation", "test")})
        lines += ["", f"best model (on validation): {MODEL_TITLES[best]}, {figure}, in {run_dir.model_dir(best)}"]
    else:
        lines += ["", "best model: none evaluated yet"]
    return "\n".join(lines)
