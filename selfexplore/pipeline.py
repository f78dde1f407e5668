"""Run the stages in order, skip finished ones, write the report.

The stages, what they read and what decides them are in `selfexplore.run_dir`; here each gets its runner. A
stage is finished when its manifest holds its current fingerprint: change `dpo.beta` and only the DPO stages and
their evaluations run again; change the task and everything does. A stage records its fingerprint in
`started.json` when it starts; one that was cut off (no manifest) resumes under the same fingerprint (rollouts
from their finished shards, training from the last Ray Train checkpoint) and starts over, saying so, under
another.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import ray

from selfexplore import console
from selfexplore.config import RunConfig, dump_yaml
from selfexplore.engines import check_backend
from selfexplore.errors import USER_ERRORS, StageError, root_cause
from selfexplore.io import atomic_write, write_json
from selfexplore.report import write_report
from selfexplore.run_dir import STAGES, TRAINED_MODELS, RunDir, pipeline_stages, stage_fingerprint
from selfexplore.stages import base, dpo, explore, rft, rft_greedy, rft_sample, sample, select, sft
from selfexplore.stages import eval as eval_stage
from selfexplore.status import key_figure
from selfexplore.tasks import get_task


RUNNERS: dict[str, Callable[[RunConfig, RunDir], dict]] = {
    "base": base.run,
    "sft": sft.run,
    "sample": sample.run,
    "select": select.run,
    "rft": rft.run,
    "rft-greedy": rft_greedy.run,
    "rft-sample": rft_sample.run,
    "explore": explore.run,
    "dpo-outcome": functools.partial(dpo.run, kind="outcome"),
    "dpo-step": functools.partial(dpo.run, kind="step"),
    **{f"eval-{name}": functools.partial(eval_stage.run, model_stage=name) for name in TRAINED_MODELS},
}
assert RUNNERS.keys() == STAGES.keys(), "every stage in selfexplore.run_dir.STAGES has a runner"


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
    """Run one stage unless its manifest is current; return the manifest. What the libraries print while it runs
    goes to the stage's log (`RunDir.stage_log`), which a failure names on the terminal."""
    run_dir = RunDir.of(cfg)
    fp = stage_fingerprint(cfg, name)
    manifest = run_dir.manifest(name)
    if manifest and manifest["fingerprint"] == fp:
        console.say(f"[{name}] up to date ({manifest['wall_s']:.0f}s when it ran), skipping")
        return manifest
    stage = STAGES[name]
    for need in stage.needs(cfg):
        if not run_dir.is_done(cfg, need):
            raise StageError(f"stage {name} needs stage {need} to be finished first: run `selfexplore run` or `selfexplore stage {need}`")
    started = run_dir.started(name)
    if started and started["fingerprint"] == fp and not manifest:
        console.say(f"[{name}] resuming the run cut off at {started['started_at']}")
    elif run_dir.stage_dir(name).exists():
        # Made under another config or other inputs, or by nobody we know of: never reuse any of it.
        console.say(f"[{name}] {run_dir.stage_dir(name)} holds work from another config or inputs; starting over")
        run_dir.discard(name)
    console.say(f"[{name}] running")
    with console.log_to(run_dir.stage_log(name)) as log:
        try:
            init_ray(cfg)
            if not started or started["fingerprint"] != fp:
                write_json(run_dir.started_path(name), {"fingerprint": fp, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
            start = time.time()
            metrics = RUNNERS[name](cfg, run_dir)
        except Exception as e:
            console.log_exception()
            console.warn(f"[{name}] failed" + (f"; full log: {log}" if log else ""))
            if isinstance(e, USER_ERRORS):
                raise
            raise StageError(f"stage {name}: {root_cause(e)}") from e
    manifest = {
        "stage": name,
        "fingerprint": fp,
        "inputs": {need: run_dir.manifest(need)["fingerprint"] for need in stage.needs(cfg)},
        "config": [dataclasses.asdict(section) if dataclasses.is_dataclass(section) else section for section in stage.decided_by(cfg)],
        "metrics": metrics,
        "wall_s": time.time() - start,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(run_dir.manifest_path(name), manifest)
    console.say(f"[{name}] done in {manifest['wall_s']:.0f}s: {key_figure(name, metrics)}")
    return manifest


def check_inputs(cfg: RunConfig) -> None:
    """Fail on bad data or a missing model now, before any stage runs, not an hour into the run."""
    check_backend(cfg.engine)
    task = get_task(cfg.task.name)
    for split in ("train", "test"):
        task.load(split, cfg.task)
    if cfg.model.path:
        base.check_model_path(cfg.model.path)


def start_run(cfg: RunConfig) -> RunDir:
    """Check the inputs, then write the config the run goes on under (`config.yaml`: what `status`, `eval --run`,
    `serve` and the benchmarks open the run with), for `run` and `stage` alike."""
    check_inputs(cfg)
    run_dir = RunDir.of(cfg)
    run_dir.root.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir.config, dump_yaml(cfg))
    return run_dir


def run_pipeline(cfg: RunConfig) -> str:
    """Run every stage of `cfg` and return the report text."""
    run_dir = start_run(cfg)
    stages = pipeline_stages(cfg)
    log = console.log_file()
    console.say(f"run `{cfg.name}`: {len(stages)} stages in {run_dir.root}" + (f" (library logs in {log.parent})" if log else ""))
    start = time.time()
    for name in stages:
        run_stage(cfg, name)
    report = write_report(run_dir, cfg, time.time() - start)
    console.say(f"\n{report}\nThe report with its figures: {run_dir.report}")
    return report


@contextmanager
def session(cfg: RunConfig, verbose: bool) -> Iterator[None]:
    """A command's console (`console.session`): the libraries' output in the run's logs unless `verbose`. A Ray
    that the command started is shut down inside it, so that the last lines its workers send land in the log too."""
    ours = not ray.is_initialized()
    with console.session(RunDir.of(cfg).run_log, verbose):
        try:
            yield
        finally:
            if ours and ray.is_initialized():
                ray.shutdown()
