"""The run directory: every path of a run, every stage, what each reads and which config decides its output.

    runs/NAME/
      config.yaml  report.md  report/*.png
      logs/run.log  logs/<stage>.log      what Ray, DeepSpeed, transformers... printed (the terminal shows our lines)
      base/model/                         the base model (unless `model.path` names one)
      sft/model/   rft/model/   dpo-outcome/model/   dpo-step/model/
        (+ `train/`: Ray Train checkpoints, `metrics.jsonl` and `tensorboard/`: every logged training step)
      sample/samples/rows-*.jsonl         N graded samples per problem (batch shards `part-*.jsonl` while it runs)
      select/rft.jsonl  select/pairs.jsonl    the RFT set and the outcome pairs (of the SFT model's samples)
      rft-greedy/solutions/rows-*.jsonl  rft-greedy/pairs.jsonl    with `select.rejected_from: rft_greedy`: the RFT
                                          model's greedy solutions and the outcome pairs built on them
      rft-sample/samples/rows-*.jsonl  rft-sample/correct.jsonl  rft-sample/pairs.jsonl    with `select.rejected_from:
                                          rft_samples`: the RFT model's samples, and the outcome pairs selected from them
      explore/probes/rows-*.jsonl  explore/gpairs.jsonl  explore/step_values.jsonl
      eval/<model>/{validation,test}.jsonl  eval/<model>/{validation,test}.summary.json
      <stage>/started.json  <stage>/manifest.json
      (a rollout's shard directory, until it is sealed: `inputs/`, the rows not yet done, one file per batch)

A stage is done when its `manifest.json` holds its current fingerprint: a hash of the config that decides its
output and of the fingerprints of the stages it reads. Which stages it reads is derived from the artifacts it
reads (`Stage.reads`), never declared twice; the outcome pairs are the one artifact the config chooses
(`outcome_pairs`), and a run holds only the stages its trained models need (`pipeline_stages`). Cheap selection (`select`) is its own stage, so changing
`select.max_rft_per_problem` re-selects from the same samples instead of sampling again.

No other module spells a run path or a stage name: stages, the pipeline, the report, `eval --run`, `status`
and `serve RUN_DIR` all go through `RunDir` and `STAGES`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from selfexplore.config import RunConfig, TrainConfig, fingerprint, load_config
from selfexplore.errors import ConfigError
from selfexplore.io import read_json


@dataclass(frozen=True)
class Artifact:
    """A file or directory that one stage writes (`stage/name`) and later stages read."""

    stage: str
    name: str


BASE_MODEL = Artifact("base", "model")
SAMPLES = Artifact("sample", "samples")
RFT_SET = Artifact("select", "rft.jsonl")
OUTCOME_PAIRS = Artifact("select", "pairs.jsonl")
RFT_GREEDY = Artifact("rft-greedy", "solutions")
ON_POLICY_PAIRS = Artifact("rft-greedy", "pairs.jsonl")
RFT_SAMPLES = Artifact("rft-sample", "samples")
RFT_SAMPLE_CORRECT = Artifact("rft-sample", "correct.jsonl")
RFT_SAMPLE_PAIRS = Artifact("rft-sample", "pairs.jsonl")
PROBES = Artifact("explore", "probes")
STEP_PAIRS = Artifact("explore", "gpairs.jsonl")
STEP_VALUES = Artifact("explore", "step_values.jsonl")

TRAINED_MODELS = ("sft", "rft", "dpo-outcome", "dpo-step")
"""The stages that train a model, in pipeline order (the rows of the report)."""

MODEL_TITLES = {"sft": "SFT", "rft": "RFT", "dpo-outcome": "DPO (outcome pairs)", "dpo-step": "Self-Explore (step pairs)"}


def model(stage: str) -> Artifact:
    return Artifact(stage, "model")


def outcome_pairs(c: RunConfig) -> Artifact:
    """The outcome pairs that `explore` searches and `dpo-outcome` trains on, as `select.rejected_from` says."""
    return {"samples": OUTCOME_PAIRS, "rft_greedy": ON_POLICY_PAIRS, "rft_samples": RFT_SAMPLE_PAIRS}[c.select.rejected_from]


def generation(c: RunConfig) -> tuple:
    """The engine settings that change what a rollout generates: backend, dtype and device. Engine count, batch
    size and vLLM's scheduling settings do not (per-row seeds); `tensor_parallel_size` changes only the summation
    order of the kernels, which no engine promises to keep anyway (docs/engines.md)."""
    return (c.engine.backend, c.engine.dtype, c.engine.num_gpus > 0)


def problems(c: RunConfig) -> dict:
    """The task settings; `task.arith.swap_operands` only when not 0, so that runs made before the key existed (with
    one order) keep their fingerprints, and so their data and models."""
    settings = asdict(c.task)
    if settings["arith"]["swap_operands"] == 0:
        del settings["arith"]["swap_operands"]
    return settings


def selection(c: RunConfig) -> dict:
    """The select settings that decide the RFT set and the SFT samples' pairs; `select.rejected_from` only decides
    which pairs later stages read (so switching it never retrains RFT)."""
    return {key: value for key, value in asdict(c.select).items() if key != "rejected_from"}


def training(section: TrainConfig) -> dict:
    """A training stage's settings; `attn_implementation` only when not `auto`, so that runs trained before the key
    existed (with transformers' default kernel) keep their fingerprints, and so their models."""
    settings = asdict(section)
    if settings["attn_implementation"] == "auto":
        del settings["attn_implementation"]
    return settings


def search(c: RunConfig) -> dict:
    """The explore settings that decide the pit search; `explore.pair_format` only decides what `dpo-step` trains on."""
    return {key: value for key, value in asdict(c.explore).items() if key != "pair_format"}


@dataclass(frozen=True)
class Stage:
    name: str
    reads: tuple[Artifact | Callable[[RunConfig], Artifact], ...]
    """What the stage reads from the run (an artifact, or the function of the config that chooses one); the stages
    it depends on are the writers of these."""
    decided_by: Callable[[RunConfig], tuple]
    """The config sections (or values) that decide its output."""
    directory: str = ""
    """Its directory under the run (default: its name)."""

    def inputs(self, cfg: RunConfig) -> tuple[Artifact, ...]:
        return tuple(read if isinstance(read, Artifact) else read(cfg) for read in self.reads)

    def needs(self, cfg: RunConfig) -> tuple[str, ...]:
        return tuple(dict.fromkeys(artifact.stage for artifact in self.inputs(cfg)))


def eval_stage(model_stage: str) -> Stage:
    return Stage(f"eval-{model_stage}", (model(model_stage),), lambda c: (problems(c), c.eval.max_tokens, generation(c)), f"eval/{model_stage}")


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in [
        Stage("base", (), lambda c: (c.model,)),
        Stage("sft", (BASE_MODEL,), lambda c: (problems(c), training(c.sft))),
        Stage("sample", (model("sft"),), lambda c: (problems(c), c.sample, generation(c))),
        Stage("select", (SAMPLES,), lambda c: (selection(c),)),
        Stage("rft", (BASE_MODEL, RFT_SET), lambda c: (problems(c), training(c.rft))),
        Stage("rft-greedy", (model("rft"), RFT_SET), lambda c: (problems(c), c.sample, generation(c))),
        # `select`'s settings pick its pairs too; they also decide the RFT set, so any change of them trains RFT again.
        Stage("rft-sample", (model("rft"),), lambda c: (problems(c), c.sample, selection(c), generation(c))),
        Stage("explore", (model("rft"), outcome_pairs), lambda c: (problems(c), search(c), generation(c))),
        Stage("dpo-outcome", (model("rft"), outcome_pairs), lambda c: (training(c.dpo),)),
        Stage("dpo-step", (model("rft"), STEP_PAIRS), lambda c: (training(c.dpo), c.explore.pair_format)),
        *(eval_stage(name) for name in TRAINED_MODELS),
    ]
}


def pipeline_stages(cfg: RunConfig) -> list[str]:
    """The stages `selfexplore run` runs, in order: those that train a model, the evaluations `eval.models` names,
    and every stage these read from (`rft-greedy` or `rft-sample` only when the outcome pairs are theirs)."""
    wanted = [*TRAINED_MODELS, *(f"eval-{name}" for name in cfg.eval.models)]
    needed: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name not in needed:
            needed.add(name)
            wanted += STAGES[name].needs(cfg)
    return [name for name in STAGES if name in needed]


def stage_fingerprint(cfg: RunConfig, name: str) -> str:
    stage = STAGES[name]
    return fingerprint(name, *stage.decided_by(cfg), *(stage_fingerprint(cfg, need) for need in stage.needs(cfg)))


@dataclass(frozen=True)
class TrainLogs:
    """What a training stage records of every logged step: one JSON line each, and TensorBoard event files."""

    metrics: Path
    tensorboard: Path


@dataclass(frozen=True)
class RunDir:
    """The paths of one run. `external_base_model` is `model.path` when the base model lives outside the run."""

    root: Path
    external_base_model: str = ""

    @classmethod
    def of(cls, cfg: RunConfig) -> RunDir:
        return cls(Path(cfg.output_dir) / cfg.name, cfg.model.path)

    @classmethod
    def open(cls, path: str | Path, overrides: list[str] = ()) -> tuple[RunDir, RunConfig]:
        """An existing run where it lies now, whatever `output_dir` said when it ran (it may have been moved), and
        its config with `overrides` applied."""
        root = Path(path)
        if not (root / "config.yaml").is_file():
            raise ConfigError(f"{root}: not a run directory (no config.yaml); runs live in `output_dir/name`, e.g. runs/tiny")
        cfg = load_config(root / "config.yaml", overrides)
        return cls(root, cfg.model.path), cfg

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def report_assets(self) -> Path:
        return self.root / "report"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run_log(self) -> Path:
        """What the libraries print outside any stage (checking inputs, writing the report)."""
        return self.logs / "run.log"

    def stage_log(self, name: str) -> Path:
        """What the libraries print while stage `name` runs, its workers' output included."""
        return self.logs / f"{name}.log"

    def stage_dir(self, name: str) -> Path:
        return self.root / (STAGES[name].directory or name)

    def path(self, artifact: Artifact) -> Path:
        if artifact == BASE_MODEL and self.external_base_model:
            return Path(self.external_base_model)
        return self.stage_dir(artifact.stage) / artifact.name

    def model_dir(self, stage: str) -> str:
        return str(self.path(model(stage)))

    def train_storage(self, stage: str) -> Path:
        """Ray Train's checkpoints of a training stage (what a cut-off training resumes from)."""
        return self.stage_dir(stage) / "train"

    def train_logs(self, stage: str) -> TrainLogs:
        return TrainLogs(self.stage_dir(stage) / "metrics.jsonl", self.stage_dir(stage) / "tensorboard")

    def shards(self, name: str) -> Path | None:
        """The shard directory of a rollout stage (what a cut-off rollout resumes from); None for other stages."""
        if name.startswith("eval-"):
            return self.stage_dir(name) / "shards"
        rollouts = {"sample": SAMPLES, "rft-greedy": RFT_GREEDY, "rft-sample": RFT_SAMPLES, "explore": PROBES}
        return self.path(rollouts[name]) if name in rollouts else None

    def eval_results(self, model_stage: str, split: str = "test") -> Path:
        """One graded row per problem of `split` (`test`: reported; `validation`: what settings are tuned on)."""
        return self.stage_dir(f"eval-{model_stage}") / f"{split}.jsonl"

    def eval_summary(self, model_stage: str, split: str = "test") -> Path:
        return self.stage_dir(f"eval-{model_stage}") / f"{split}.summary.json"

    def manifest_path(self, name: str) -> Path:
        return self.stage_dir(name) / "manifest.json"

    def started_path(self, name: str) -> Path:
        return self.stage_dir(name) / "started.json"

    def manifest(self, name: str) -> dict | None:
        return _read_if_exists(self.manifest_path(name))

    def started(self, name: str) -> dict | None:
        return _read_if_exists(self.started_path(name))

    def is_done(self, cfg: RunConfig, name: str) -> bool:
        manifest = self.manifest(name)
        return bool(manifest) and manifest["fingerprint"] == stage_fingerprint(cfg, name)

    def discard(self, name: str) -> None:
        """Remove a stage directory in one step (a rename), then delete it: a crash never leaves half of it."""
        stage_dir = self.stage_dir(name)
        trash = stage_dir.with_name(f".{stage_dir.name}.discarded-{os.getpid()}")
        stage_dir.rename(trash)
        shutil.rmtree(trash)

    def best_model(self) -> str | None:
        """The evaluated model with the highest validation accuracy (chosen on validation, never on test; ties: the
        later stage), or None before eval."""
        summaries = {name: self.eval_summary(name, "validation") for name in TRAINED_MODELS}
        scores = {name: read_json(path)["accuracy"] for name, path in summaries.items() if path.is_file()}
        return max(reversed(list(scores)), key=scores.get) if scores else None


def _read_if_exists(path: Path) -> dict | None:
    return read_json(path) if path.is_file() else None
