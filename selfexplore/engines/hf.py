"""The `hf` engine: batched transformers `generate` with the KV cache and left padding (CPU or one GPU).

Sampling is per-row seeded: every sequence draws its noise from its own generator, seeded from its prompt's seed
and its completion index (Gumbel-max: argmax(logits / T + Gumbel noise) is a sample of softmax(logits / T)). A
sequence's tokens therefore do not depend on what else is in the batch, on the chunking, or on the batch order.
"""

from __future__ import annotations

import dataclasses
import secrets

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

from selfexplore.config import EngineConfig
from selfexplore.engines import Completion, SamplingParams, derive_seed

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


class HFEngine:
    def __init__(self, model_dir: str, cfg: EngineConfig):
        self.cfg = cfg
        self.device = "cuda" if torch.cuda.is_available() and cfg.num_gpus > 0 else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[cfg.dtype]).to(self.device).eval()
        # Every token that ends a sequence: the tokenizer's and the generation config's (chat models have several),
        # as vLLM stops on.
        configured = self.model.generation_config.eos_token_id
        configured = configured if isinstance(configured, list) else [configured]
        self.eos_ids = sorted({self.tokenizer.eos_token_id, *configured} - {None})

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text).input_ids

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], params: list[SamplingParams]) -> list[list[Completion]]:
        results: list[list[Completion]] = [[] for _ in prompts]
        # Prompts with the same settings (seeds aside) share calls; sorted by length so each call pads little,
        # chunked so that a call's sequences fit in memory.
        groups: dict[SamplingParams, list[int]] = {}
        for i, p in enumerate(params):
            groups.setdefault(dataclasses.replace(p, seed=None), []).append(i)
        for shared, indices in groups.items():
            indices.sort(key=lambda i: len(prompts[i]))
            per_call = max(1, self.cfg.max_batch_sequences // shared.n)
            for start in range(0, len(indices), per_call):
                chunk = indices[start : start + per_call]
                outputs = self._generate_chunk([prompts[i] for i in chunk], [params[i].seed for i in chunk], shared)
                for i, completions in zip(chunk, outputs):
                    results[i] = completions
        return results

    def _generate_chunk(self, prompts: list[list[int]], seeds: list[int | None], params: SamplingParams) -> list[list[Completion]]:
        # Each prompt repeated n times, left-padded: greedy search in transformers returns one sequence per row.
        rows = [p for p in prompts for _ in range(params.n)]
        width = max(len(p) for p in rows)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in rows], device=self.device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows], device=self.device)
        processors = LogitsProcessorList()
        if params.temperature > 0:
            # One generator per sequence; an unseeded prompt gets a fresh random seed.
            row_seeds = [derive_seed(secrets.randbits(62) if seed is None else seed, j) for seed in seeds for j in range(params.n)]
            processors.append(SeededSampling(row_seeds, params.temperature, params.top_p))
        output = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,  # greedy over the noised logits = sampling (see SeededSampling)
            temperature=None,
            top_p=None,
            top_k=None,
            logits_processor=processors,
            max_new_tokens=params.max_tokens,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids,
        )
        generated = output[:, width:].tolist()
        completions = [self._to_completion(ids, params.stop) for ids in generated]
        return [completions[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _to_completion(self, ids: list[int], stop: tuple[str, ...]) -> Completion:
        end = next((i for i, token in enumerate(ids) if token in self.eos_ids), None)
        finished = end is not None
        if finished:
            ids = ids[:end]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            text, finished = text[:cut], True
        return Completion(text=text, token_ids=ids, finish_reason="stop" if finished else "length")


class SeededSampling(LogitsProcessor):
    """Temperature, nucleus filtering and Gumbel noise from one generator per sequence.

    Each row draws one uniform vector per step from its own generator, so its noise at step t is fixed by its
    seed alone. With greedy decoding on top, the argmax is a sample from the tempered, filtered distribution.
    """

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        self.seeds, self.temperature, self.top_p = seeds, temperature, top_p
        self.generators: list[torch.Generator] = []  # made at the first step, on the logits' device

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            probs, order = scores.softmax(-1).sort(-1, descending=True)
            # Drop a token when the tokens more likely than it already hold top_p of the mass.
            drop_sorted = probs.cumsum(-1) - probs >= self.top_p
            scores = scores.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
        if not self.generators:
            self.generators = [torch.Generator(scores.device).manual_seed(seed) for seed in self.seeds]
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-10, 1.0 - 1e-7)))
        return scores + gumbel
