"""Tokenisation of training rows, done once on the driver before the Ray Train workers start.

Sequences are built as token lists, not by tokenising joined strings: the prompt with the tokenizer's special
tokens (BOS), the response without, and EOS appended as a token id. That is the paper's construction and it keeps
the prompt/response boundary exact for any tokenizer. Examples longer than the limits are dropped and counted,
never truncated: a truncated solution teaches the model to stop mid-answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import PreTrainedTokenizerBase

from selfexplore.io import DataError

IGNORE_INDEX = -100
"""Label of the tokens that carry no loss (the prompt), as transformers and TRL expect."""


@dataclass
class Tokenized:
    """Tokenised examples ready for a TRL trainer, and how many rows were dropped for length."""

    examples: dict[str, list[list[int]]] = field(default_factory=dict)
    """Columns of the dataset (`input_ids`/`labels` for SFT, `prompt_ids`/`chosen_ids`/`rejected_ids` for DPO)."""
    dropped_too_long: int = 0
    """Rows over the length limits, left out."""
    dropped_empty: int = 0
    """DPO pairs whose rejected response is empty (nothing to push down), left out."""

    @property
    def num_examples(self) -> int:
        return len(next(iter(self.examples.values()), []))


def _require(rows: list[dict], keys: tuple[str, ...], what: str) -> None:
    if not rows:
        raise DataError(f"{what}: no training rows")
    for i, row in enumerate(rows):
        missing = [k for k in keys if not isinstance(row.get(k), str)]
        if missing:
            raise DataError(f"{what}: row {i} lacks string field(s) {', '.join(missing)} (has {sorted(row)})")


def _response_ids(tokenizer: PreTrainedTokenizerBase, text: str, eos: bool) -> list[int]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id] if eos else ids


def tokenize_sft(rows: list[dict], tokenizer: PreTrainedTokenizerBase, max_length: int) -> Tokenized:
    """`{prompt, completion}` rows -> `input_ids` and `labels` (prompt masked, completion + EOS trained)."""
    _require(rows, ("prompt", "completion"), "SFT data")
    out = Tokenized(examples={"input_ids": [], "labels": []})
    for row in rows:
        prompt = tokenizer(row["prompt"])["input_ids"]
        completion = _response_ids(tokenizer, row["completion"], eos=True)
        if len(prompt) + len(completion) > max_length:
            out.dropped_too_long += 1
            continue
        out.examples["input_ids"].append(prompt + completion)
        out.examples["labels"].append([IGNORE_INDEX] * len(prompt) + completion)
    return out


PAIR_KINDS = ("outcome", "step", "next_step")


def gets_eos(kind: str) -> tuple[bool, bool]:
    """Whether the chosen and the rejected response of a pair of this kind end with EOS.

    An outcome pair holds two whole solutions, so both end like one. A step pair's rejected is the first pit, a
    single step of a partial solution: the paper leaves EOS off so that DPO does not also penalise stopping; its
    chosen is a whole completion. A `next_step` pair (Step-DPO) holds one step on each side: neither ends.
    """
    if kind not in PAIR_KINDS:
        raise DataError(f"DPO data: pair kind must be one of {', '.join(PAIR_KINDS)}, got {kind!r}")
    return kind != "next_step", kind == "outcome"


def tokenize_dpo(
    rows: list[dict], tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int
) -> Tokenized:
    """`{prompt, chosen, rejected, kind}` rows -> `prompt_ids`, `chosen_ids`, `rejected_ids`.

    Which responses end with EOS depends on the pair's kind (`gets_eos`). A pair is dropped when
    its prompt exceeds `max_prompt_length` or prompt + the longer response exceeds `max_length`.
    """
    _require(rows, ("prompt", "chosen", "rejected", "kind"), "DPO data")
    out = Tokenized(examples={"prompt_ids": [], "chosen_ids": [], "rejected_ids": []})
    for row in rows:
        prompt = tokenizer(row["prompt"])["input_ids"]
        chosen_eos, rejected_eos = gets_eos(row["kind"])
        chosen = _response_ids(tokenizer, row["chosen"], eos=chosen_eos)
        rejected = _response_ids(tokenizer, row["rejected"], eos=rejected_eos)
        if not rejected:
            # E.g. a pit step cut to nothing upstream: it has no log-probability to push down.
            out.dropped_empty += 1
            continue
        if len(prompt) > max_prompt_length or len(prompt) + max(len(chosen), len(rejected)) > max_length:
            out.dropped_too_long += 1
            continue
        out.examples["prompt_ids"].append(prompt)
        out.examples["chosen_ids"].append(chosen)
        out.examples["rejected_ids"].append(rejected)
    return out
