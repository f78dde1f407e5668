"""The Ray Serve application: an HTTP ingress deployment in front of an engine deployment.

    build_app(ServeSettings(model="runs/tiny"))   # Python (what `selfexplore serve` runs)
    serve run serving/config.yaml                 # clusters: `import_path: serving.app:build`, settings in `args`

The ingress parses, validates and answers HTTP (see `serving.api`); it forwards each prompt to the engine
deployment through a handle, and Serve spreads those calls over the engine replicas, which batch them: static
batches with `hf` (`serving.engine`), continuous batching and token streaming with `vllm` (`serving.vllm_engine`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from selfexplore.config import from_dict
from selfexplore.engines import Completion, SamplingParams
from selfexplore.engines.vllm import worker_bundles
from serving.engine import Delta, HFEngineDeployment
from serving.settings import ServeSettings, check_settings, resolve_api_key, resolve_model
from serving.vllm_engine import VLLMEngineDeployment


class HandleClient:
    """The API's `EngineClient` over the engine deployment's handle: Serve routes each call to a replica."""

    def __init__(self, handle: DeploymentHandle):
        self.handle = handle
        self.streaming = handle.options(stream=True)

    def generate(self, request_id: str, prompt: list[int], params: SamplingParams) -> Awaitable[list[Completion]]:
        return self.handle.generate.remote(request_id, prompt, params)

    def stream(self, request_id: str, prompt: list[int], params: SamplingParams) -> AsyncIterator[list[Delta]]:
        return self.streaming.stream.remote(request_id, prompt, params)


@serve.deployment
@serve.ingress()
class Ingress:
    def __init__(self, engine: DeploymentHandle, settings: ServeSettings, model_dir: str):
        self.engine, self.settings, self.model_dir = engine, settings, model_dir

    def __serve_build_asgi_app__(self):
        # Imported here: transformers is heavy, and only replicas need it (not the process that builds the app).
        from transformers import AutoConfig, AutoTokenizer

        from serving.api import build_fastapi

        tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        context_length = getattr(AutoConfig.from_pretrained(self.model_dir), "max_position_embeddings", None)
        if self.settings.engine.backend == "vllm" and self.settings.engine.vllm.max_model_len:
            context_length = self.settings.engine.vllm.max_model_len
        engine = HandleClient(self.engine)
        return build_fastapi(self.settings, self.settings.model_name, tokenizer, context_length, engine)


def build_app(settings: ServeSettings) -> Application:
    """Check the settings, find the model, and bind the two deployments (nothing starts until `serve.run`)."""
    check_settings(settings)
    model = resolve_model(settings.model)
    settings = replace(
        settings,
        api_key=resolve_api_key(settings.api_key),
        task=settings.task or model.task,
        model_name=settings.model_name or model.name,
    )
    engine = engine_deployment(settings, model.model_dir)
    scaling = settings.scaling
    return Ingress.options(
        num_replicas=scaling.ingress_replicas,
        max_ongoing_requests=scaling.ingress_max_ongoing_requests,
        ray_actor_options={
            "num_cpus": scaling.ingress_cpus,
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}},
        },
    ).bind(engine, settings, model.model_dir)


def engine_deployment(settings: ServeSettings, model_dir: str) -> Application:
    """The engine deployment of the configured backend, its replicas and their resources."""
    scaling, batching = settings.scaling, settings.batching
    if scaling.max_replicas > scaling.min_replicas:
        replicas = {
            "autoscaling_config": {
                "min_replicas": scaling.min_replicas,
                "max_replicas": scaling.max_replicas,
                "target_ongoing_requests": scaling.target_ongoing_requests,
            }
        }
    else:
        replicas = {"num_replicas": scaling.min_replicas}
    # torch would start a thread per core in every replica; on a shared machine that oversubscribes the CPU
    # many times over. One thread per reserved CPU.
    threads = str(max(1, int(scaling.engine_cpus)))
    env = {"OMP_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}
    gpus, placement = engine_placement(settings)
    options = {
        **replicas,
        "max_ongoing_requests": scaling.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": scaling.engine_cpus, "num_gpus": gpus, "runtime_env": {"env_vars": env}},
        **placement,
    }
    if settings.engine.backend == "vllm":
        return VLLMEngineDeployment.options(**options).bind(model_dir, settings.engine)
    return HFEngineDeployment.options(**options).bind(
        model_dir, settings.engine, batching.max_batch_size, batching.batch_wait_timeout_s
    )


def engine_placement(settings: ServeSettings) -> tuple[float, dict]:
    """GPUs of one engine replica's actor, and the placement group options of the replica (if any): see
    `selfexplore.engines.vllm.worker_bundles`."""
    bundles = worker_bundles(settings.engine, settings.scaling.engine_cpus)
    if bundles is None:
        return settings.engine.num_gpus, {}
    return 0, {"placement_group_bundles": bundles, "placement_group_strategy": "PACK"}


def build(args: dict) -> Application:
    """Application builder for `serve run` / `serve deploy`: `args` are `ServeSettings` keys, checked."""
    return build_app(from_dict(ServeSettings, dict(args), source="serve application args"))
