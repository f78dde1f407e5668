"""Tokenisation of training rows, done once on the driver before the Ray Train workers start.

Sequences are built as token lists, not by tokenising joined strings: the prompt with the tokenizer's special
tokens (BOS), the response without, and EOS appended as a token id. That is the paper's construction and it keeps
the prompt/response boundary exact for any tokenizer. Examples longer than the limits are dropped and counted,
never truncated: a truncated solution teaches the model to stop mid-answer.

Rows are read once, as they come, and tokenised a batch at a time into an Arrow table of int32 lists: at the
paper's MATH scale (~48K RFT rows or ~47K pairs of 1,000-3,000 characters) Python lists of token ids would take
gigabytes on the driver and again in every worker; the table takes 4 bytes a token, and Ray hands it to the
workers of a node through shared memory without a copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
from transformers import PreTrainedTokenizerBase

from selfexplore.io import DataError

IGNORE_INDEX = -100
"""Label of the tokens that carry no loss (the prompt), as transformers and TRL expect."""

BATCH_ROWS = 1024
"""Rows tokenised in one tokenizer call, and rows per chunk of the table: the driver holds one batch as Python."""

TOKEN_LISTS = pa.list_(pa.int32())


@dataclass
class Tokenized:
    """Tokenised examples ready for a TRL trainer, and how many rows were dropped for length."""

    examples: pa.Table
    """Columns of the dataset (`input_ids`/`labels` for SFT, `prompt_ids`/`chosen_ids`/`rejected_ids` for DPO),
    each a list of int32 token ids per example."""
    dropped_too_long: int = 0
    """Rows over the length limits, left out."""
    dropped_empty: int = 0
    """DPO pairs whose rejected response is empty (nothing to push down), left out."""

    @property
    def num_examples(self) -> int:
        return self.examples.num_rows


class _TableBuilder:
    """Appends examples column by column; `flush` turns those appended since the last one into an Arrow chunk."""

    def __init__(self, columns: tuple[str, ...]):
        self.columns = columns
        self.pending: dict[str, list[list[int]]] = {c: [] for c in columns}
        self.chunks: dict[str, list[pa.Array]] = {c: [] for c in columns}

    def append(self, *values: list[int]) -> None:
        for column, ids in zip(self.columns, values, strict=True):
            self.pending[column].append(ids)

    def flush(self) -> None:
        for column in self.columns:
            if self.pending[column]:
                self.chunks[column].append(pa.array(self.pending[column], type=TOKEN_LISTS))
                self.pending[column] = []

    def table(self) -> pa.Table:
        self.flush()
        return pa.table({c: pa.chunked_array(self.chunks[c], type=TOKEN_LISTS) for c in self.columns})


def _batches(rows: Iterable[dict], keys: tuple[str, ...], what: str) -> Iterable[list[dict]]:
    """`rows` in lists of `BATCH_ROWS`, each row checked for string `keys`; an empty input is an error."""
    batch, seen = [], 0
    for row in rows:
        missing = [k for k in keys if not isinstance(row.get(k), str)]
        if missing:
            raise DataError(f"{what}: row {seen} lacks string field(s) {', '.join(missing)} (has {sorted(row)})")
        batch.append(row)
        seen += 1
        if len(batch) == BATCH_ROWS:
            yield batch
            batch = []
    if batch:
        yield batch
    if not seen:
        raise DataError(f"{what}: no training rows")


def _ids(tokenizer: PreTrainedTokenizerBase, texts: list[str], special_tokens: bool) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=special_tokens, return_attention_mask=False)["input_ids"]


def _eos(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.eos_token_id is None:
        raise DataError(f"the tokenizer ({tokenizer.name_or_path or type(tokenizer).__name__}) has no EOS token: set `eos_token` in its tokenizer_config.json")
    return tokenizer.eos_token_id


def tokenize_sft(rows: Iterable[dict], tokenizer: PreTrainedTokenizerBase, max_length: int) -> Tokenized:
    """`{prompt, completion}` rows -> `input_ids` and `labels` (prompt masked, completion + EOS trained)."""
    eos = _eos(tokenizer)
    table = _TableBuilder(("input_ids", "labels"))
    dropped = 0
    for batch in _batches(rows, ("prompt", "completion"), "SFT data"):
        prompts = _ids(tokenizer, [r["prompt"] for r in batch], special_tokens=True)
        completions = _ids(tokenizer, [r["completion"] for r in batch], special_tokens=False)
        for prompt, completion in zip(prompts, completions, strict=True):
            completion.append(eos)
            if len(prompt) + len(completion) > max_length:
                dropped += 1
                continue
            table.append(prompt + completion, [IGNORE_INDEX] * len(prompt) + completion)
        table.flush()
    return Tokenized(table.table(), dropped_too_long=dropped)


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
    rows: Iterable[dict], tokenizer: PreTrainedTokenizerBase, max_length: int, max_prompt_length: int
) -> Tokenized:
    """`{prompt, chosen, rejected, kind}` rows -> `prompt_ids`, `chosen_ids`, `rejected_ids`.

    Which responses end with EOS depends on the pair's kind (`gets_eos`). A pair is dropped when
    its prompt exceeds `max_prompt_length` or prompt + the longer response exceeds `max_length`.
    """
    eos = _eos(tokenizer)
    table = _TableBuilder(("prompt_ids", "chosen_ids", "rejected_ids"))
    too_long = empty = 0
    for batch in _batches(rows, ("prompt", "chosen", "rejected", "kind"), "DPO data"):
        ends = [gets_eos(r["kind"]) for r in batch]
        prompts = _ids(tokenizer, [r["prompt"] for r in batch], special_tokens=True)
        chosens = _ids(tokenizer, [r["chosen"] for r in batch], special_tokens=False)
        rejecteds = _ids(tokenizer, [r["rejected"] for r in batch], special_tokens=False)
        for prompt, chosen, rejected, (chosen_eos, rejected_eos) in zip(prompts, chosens, rejecteds, ends, strict=True):
            chosen += [eos] if chosen_eos else []
            rejected += [eos] if rejected_eos else []
            if not rejected:
                # E.g. a pit step cut to nothing upstream: it has no log-probability to push down.
                empty += 1
                continue
            if len(prompt) > max_prompt_length or len(prompt) + max(len(chosen), len(rejected)) > max_length:
                too_long += 1
                continue
            table.append(prompt, chosen, rejected)
        table.flush()
    return Tokenized(table.table(), dropped_too_long=too_long, dropped_empty=empty)
