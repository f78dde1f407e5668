"""The `hf` engine: batched transformers `generate` with the KV cache and left padding (CPU or one GPU)."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selfexplore.config import EngineConfig
from selfexplore.engines import Completion, SamplingParams

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


class HFEngine:
    def __init__(self, model_dir: str, cfg: EngineConfig):
        self.cfg = cfg
        self.device = "cuda" if torch.cuda.is_available() and cfg.num_gpus > 0 else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=DTYPES[cfg.dtype]).to(self.device).eval()

    @torch.inference_mode()
    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        results: list[list[Completion]] = [[] for _ in prompts]
        # Sort by length so each chunk pads little; chunk so that chunk x n sequences fit in memory.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        per_chunk = max(1, self.cfg.max_batch_sequences // params.n)
        for chunk_idx, start in enumerate(range(0, len(order), per_chunk)):
            chunk = order[start : start + per_chunk]
            if params.seed is not None:
                torch.manual_seed(params.seed + chunk_idx)
            for i, completions in zip(chunk, self._generate_chunk([prompts[i] for i in chunk], params)):
                results[i] = completions
        return results

    def _generate_chunk(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
        sampling = params.temperature > 0
        output = self.model.generate(
            **batch,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            top_k=None,
            max_new_tokens=params.max_tokens,
            num_return_sequences=params.n,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        generated = output[:, batch["input_ids"].shape[1] :].tolist()
        completions = [self._to_completion(ids, params.stop) for ids in generated]
        return [completions[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _to_completion(self, ids: list[int], stop: list[str]) -> Completion:
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        finished = eos in ids
        if finished:
            ids = ids[: ids.index(eos)]
        elif pad != eos:
            ids = [t for t in ids if t != pad]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop if s in text), default=-1)
        if cut >= 0:
            text, finished = text[:cut], True
        return Completion(text=text, n_tokens=len(ids), finish_reason="stop" if finished else "length")
