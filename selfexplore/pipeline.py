"""Run the stages in order, skip finished ones, write the report.

A stage is finished when `<run>/<stage>/manifest.json` holds the stage's current fingerprint: a hash of the
config sections that decide its output and of the fingerprints of the stages it reads. Change `dpo.beta` and
only the DPO stages and `eval` run again; change the task and everything does. A stage records its fingerprint
in `started.json` when it starts; one that was cut off (no manifest) resumes under the same fingerprint (rollouts
from their finished shards, training from the last Ray Train checkpoint) and starts over under another.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from pathlib import Path

import ray

from selfexplore.config import RunConfig, dump_yaml, fingerprint
from selfexplore.engines import check_backend
from selfexplore.errors import StageError
from selfexplore.io import atomic_write, read_json, write_json
from selfexplore.stages import base, dpo, explore, rft, sample, sft
from selfexplore.stages import eval as eval_stage
from selfexplore.tasks import get_task


def generation(c: RunConfig) -> tuple:
    """The engine settings that change what a rollout generates: backend, dtype and device. Engine count, batch
    size and vLLM's scheduling settings do not (per-row seeds); `tensor_parallel_size` changes only the summation
    order of the kernels, which no engine promises to keep anyway (docs/engines.md)."""
    return (c.engine.backend, c.engine.dtype, c.engine.num_gpus > 0)


# name -> (run function, stages it reads, config sections that decide its output)
STAGES = {
    "base": (base.run, (), lambda c: (c.model,)),
    "sft": (sft.run, ("base",), lambda c: (c.task, c.sft)),
    "sample": (sample.run, ("sft",), lambda c: (c.task, c.sample, generation(c))),
    "rft": (rft.run, ("base", "sample"), lambda c: (c.task, c.rft)),
    "explore": (explore.run, ("rft", "sample"), lambda c: (c.task, c.explore, generation(c))),
    "dpo-outcome": (lambda c, d: dpo.run(c, d, "outcome"), ("rft", "sample"), lambda c: (c.dpo,)),
    "dpo-step": (lambda c, d: dpo.run(c, d, "step"), ("rft", "explore"), lambda c: (c.dpo,)),
    "eval": (eval_stage.run, ("sft", "rft", "dpo-outcome", "dpo-step"), lambda c: (c.task, c.eval, generation(c))),
}

REPORT_NAMES = {"sft": "SFT", "rft": "RFT", "dpo-outcome": "DPO (outcome pairs)", "dpo-step": "Self-Explore (step pairs)"}


def stage_fingerprint(cfg: RunConfig, name: str) -> str:
    _, needs, sections = STAGES[name]
    return fingerprint(name, *sections(cfg), *(stage_fingerprint(cfg, need) for need in needs))


def read_manifest(run_dir: Path, name: str) -> dict | None:
    path = run_dir / name / "manifest.json"
    return read_json(path) if path.is_file() else None


def init_ray(cfg: RunConfig) -> None:
    """Join the configured cluster or the Ray job's, else start a local Ray in-process."""
    if ray.is_initialized():
        return
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)  # a job's or cluster's runtime env applies (it sets OMP_NUM_THREADS itself)
    else:
        # "local": never join a cluster some earlier `ray start` left running on this machine.
        env = {"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}}
        ray.init(address="local", num_cpus=cfg.ray.num_cpus or None, runtime_env=env)
    ray.data.DataContext.get_current().enable_progress_bars = False  # our own progress lines are quieter


def run_stage(cfg: RunConfig, name: str) -> dict:
    """Run one stage unless its manifest is current; return the manifest."""
    run_dir = cfg.run_dir
    fp = stage_fingerprint(cfg, name)
    manifest = read_manifest(run_dir, name)
    if manifest and manifest["fingerprint"] == fp:
        print(f"[{name}] up to date ({manifest['wall_s']:.0f}s when it ran), skipping", flush=True)
        return manifest
    run, needs, sections = STAGES[name]
    for need in needs:
        upstream = read_manifest(run_dir, need)
        if not upstream or upstream["fingerprint"] != stage_fingerprint(cfg, need):
            raise StageError(f"stage {name} needs stage {need} to be finished first: run `selfexplore run` or `selfexplore stage {need}`")
    stage_dir = run_dir / name
    started = read_json(stage_dir / "started.json") if (stage_dir / "started.json").is_file() else None
    if started and started["fingerprint"] == fp and not manifest:
        print(f"[{name}] resuming the run cut off at {started['started_at']}", flush=True)
    elif stage_dir.exists():
        # Made under another config or other inputs, or by nobody we know of: never reuse any of it.
        print(f"[{name}] {stage_dir} holds work from another config or inputs; starting over", flush=True)
        discard(stage_dir)
    print(f"[{name}] running", flush=True)
    init_ray(cfg)
    if not started or started["fingerprint"] != fp:
        write_json(stage_dir / "started.json", {"fingerprint": fp, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    start = time.time()
    metrics = run(cfg, run_dir)
    manifest = {
        "stage": name,
        "fingerprint": fp,
        "inputs": {need: read_manifest(run_dir, need)["fingerprint"] for need in needs},
        "config": [dataclasses.asdict(section) if dataclasses.is_dataclass(section) else section for section in sections(cfg)],
        "metrics": metrics,
        "wall_s": time.time() - start,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(stage_dir / "manifest.json", manifest)
    print(f"[{name}] done in {manifest['wall_s']:.0f}s", flush=True)
    return manifest


def discard(stage_dir: Path) -> None:
    """Remove a stage directory in one step (a rename), then delete it: a crash never leaves half of it behind."""
    trash = stage_dir.with_name(f".{stage_dir.name}.discarded-{os.getpid()}")
    stage_dir.rename(trash)
    shutil.rmtree(trash)


def check_inputs(cfg: RunConfig) -> None:
    """Fail on bad data or a missing model now, before any stage runs, not an hour into the run."""
    check_backend(cfg.engine)
    task = get_task(cfg.task.name)
    for split in ("train", "test"):
        task.load(split, cfg.task)
    if cfg.model.path:
        base.check_model_path(cfg.model.path)


def run_pipeline(cfg: RunConfig, stages: list[str] | None = None) -> str:
    """Run every stage (or the named ones) and return the report text."""
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    check_inputs(cfg)
    atomic_write(run_dir / "config.yaml", dump_yaml(cfg))
    start = time.time()
    for name in stages or STAGES:
        run_stage(cfg, name)
    if (run_dir / "eval" / "manifest.json").is_file():
        report = write_report(cfg, time.time() - start)
        print(report, flush=True)
        return report
    return ""


def write_report(cfg: RunConfig, wall_s: float) -> str:
    run_dir = cfg.run_dir
    summary = read_json(run_dir / "eval" / "summary.json")
    walls = {name: m["wall_s"] for name in STAGES if (m := read_manifest(run_dir, name))}
    lines = [
        f"# selfexplore run `{cfg.name}`",
        "",
        f"Task `{cfg.task.name}`, model `{cfg.model.path or 'tiny (built from scratch)'}`, greedy decoding on the test set.",
        "",
        "| model | accuracy | 95% CI | correct / n |",
        "|---|---|---|---|",
    ]
    for name in cfg.eval.models:
        s = summary[name]
        lo, hi = s["ci95"]
        lines.append(f"| {REPORT_NAMES.get(name, name)} | {100 * s['accuracy']:.1f}% | {100 * lo:.1f}–{100 * hi:.1f}% | {s['correct']} / {s['n']} |")
    sample_stats = read_json(run_dir / "sample" / "stats.json")
    explore_stats = read_json(run_dir / "explore" / "stats.json")
    lines += [
        "",
        f"Sampling: {sample_stats['sample_accuracy']:.1%} of {sample_stats['samples']} samples correct, "
        f"pass@{cfg.sample.n} {sample_stats['pass_at_n']:.1%}; {sample_stats['rft_rows']} RFT rows, "
        f"{sample_stats['outcome_pairs']} outcome pairs.",
        f"Exploration: {explore_stats['rejected']} rejected solutions, {explore_stats['probes']} probes "
        f"(k={cfg.explore.k}, {cfg.explore.strategy}), first pits at steps {explore_stats['pit_histogram']}, "
        f"{explore_stats['step_pairs']} step pairs.",
        "",
        "Stage wall times: " + ", ".join(f"{n} {w:.0f}s" for n, w in walls.items()) + f" (this invocation {wall_s:.0f}s).",
        "",
    ]
    report = "\n".join(lines)
    atomic_write(run_dir / "report.md", report)
    return report
