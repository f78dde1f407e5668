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
from selfexplore.engines.vllm import generated, start_async_llm, vllm_sampling
from serving.engine import Delta, generated_tokens_counter


@serve.deployment
class VLLMEngineDeployment:
    def __init__(self, model_dir: str, engine: EngineConfig):
        check_backend(engine)
        self.engine = start_async_llm(model_dir, engine)
        self.generated_tokens = generated_tokens_counter()

    async def stream(self, request_id: str, prompt: list[int], params: SamplingParams) -> AsyncIterator[list[Delta]]:
        """The new output of each engine step that advanced one of this prompt's completions."""
        from vllm.sampling_params import RequestOutputKind

        # DELTA: each output holds only what is new since the last one.
        sampling = vllm_sampling(params, output_kind=RequestOutputKind.DELTA)
        async for output in self.engine.generate({"prompt_token_ids": prompt}, sampling, request_id):
            deltas = [_delta(o) for o in output.outputs]
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


def _delta(output) -> Delta:
    """Our delta of one vLLM `CompletionOutput` (DELTA kind: the tokens and text of one engine step)."""
    token_ids, finish_reason = generated(output)
    return Delta(output.index, output.text, token_ids, finish_reason)
