"""The Ray Serve application: an HTTP ingress deployment in front of an engine deployment.

    build_app(ServeSettings(model="runs/tiny"))   # Python (what `selfexplore serve` runs)
    serve run serving/config.yaml                 # clusters: `import_path: serving.app:build`, settings in `args`

The ingress parses, validates and answers HTTP (see `serving.api`); it forwards each prompt to the engine
deployment through a handle, and Serve spreads those calls over the engine replicas, which batch them.
"""

from __future__ import annotations

from dataclasses import replace

from ray import serve
from ray.serve import Application
from ray.serve.handle import DeploymentHandle

from selfexplore.config import from_dict
from selfexplore.engines import Completion, SamplingParams
from serving.engine import EngineDeployment
from serving.settings import ServeSettings, check_settings, resolve_api_key, resolve_model


@serve.deployment
@serve.ingress()
class Ingress:
    def __init__(self, engine: DeploymentHandle, settings: ServeSettings, model_dir: str):
        self.engine, self.settings, self.model_dir = engine, settings, model_dir

    def __serve_build_asgi_app__(self):
        # Imported here: transformers is heavy, and only replicas need it (not the process that builds the app).
        from transformers import AutoConfig, AutoTokenizer

        from serving.api import build_fastapi

        async def generate(prompt: str, params: SamplingParams) -> list[Completion]:
            return await self.engine.generate.remote(prompt, params)

        tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        context_length = getattr(AutoConfig.from_pretrained(self.model_dir), "max_position_embeddings", None)
        if self.settings.engine.backend == "vllm" and self.settings.engine.vllm.max_model_len:
            context_length = self.settings.engine.vllm.max_model_len
        return build_fastapi(self.settings, self.settings.model_name, tokenizer, context_length, generate)


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
    engine = EngineDeployment.options(
        **replicas,
        max_ongoing_requests=scaling.max_ongoing_requests,
        ray_actor_options={
            "num_cpus": scaling.engine_cpus,
            "num_gpus": settings.engine.num_gpus,
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}},
        },
    ).bind(model.model_dir, settings.engine, batching.max_batch_size, batching.batch_wait_timeout_s)
    return Ingress.options(
        num_replicas=scaling.ingress_replicas,
        max_ongoing_requests=scaling.ingress_max_ongoing_requests,
        ray_actor_options={
            "num_cpus": scaling.ingress_cpus,
            "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}},
        },
    ).bind(engine, settings, model.model_dir)


def build(args: dict) -> Application:
    """Application builder for `serve run` / `serve deploy`: `args` are `ServeSettings` keys, checked."""
    return build_app(from_dict(ServeSettings, dict(args), source="serve application args"))
