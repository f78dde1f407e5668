"""Problem rows from a local JSON Lines file or a hub dataset, with a location for every row for error messages.

Shared by the gsm8k and math loaders: they map each raw row to a problem `{id, question, solution, answer}` and
report a bad row as `DataError("<file>:<line>: ...")` (or `<dataset>[<split>] row <n>` for hub data).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from selfexplore.config import TaskConfig
from selfexplore.errors import ConfigError, DataError
from selfexplore.io import read_jsonl

logger = logging.getLogger(__name__)


class SkippedRow(Exception):
    """A well-formed row that cannot be used (its gold solution states no answer): left out, with a warning."""


_HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+(?::[\w.-]+)?")
"""`owner/name` or `owner/name:config` (e.g. `openai/gsm8k:main`)."""


@dataclass
class Rows:
    """The raw rows of one split and where they came from."""

    source: str
    split: str
    rows: list[dict]
    is_file: bool

    def where(self, index: int) -> str:
        """Where row `index` came from: `file:line` (1-based, counting blank lines) or `dataset[split] row n`."""
        if not self.is_file:
            return f"{self.source}[{self.split}] row {index}"
        return f"{self.source}:{self._line_numbers[index]}"

    @cached_property
    def _line_numbers(self) -> list[int]:
        # Only needed on the error path: read_jsonl skips blank lines, so count them again here.
        with open(self.source, encoding="utf-8") as f:
            return [line_no for line_no, line in enumerate(f, 1) if line.strip()]


def read_rows(cfg: TaskConfig, split: str) -> Rows:
    """The raw rows of the `train` or `test` file, `cfg.train_path` / `cfg.test_path` (the validation split is
    held out of train: `selfexplore.tasks.split_problems`)."""
    if split not in ("train", "test"):
        raise ValueError(f"{cfg.name} has files train and test, not {split!r}")
    source = cfg.train_path if split == "train" else cfg.test_path
    if not source:
        raise ConfigError(f"task.{split}_path is empty: task {cfg.name} needs a JSON Lines file or a hub dataset name")
    if Path(source).exists() or source.endswith((".jsonl", ".json")) or not _HUB_NAME.fullmatch(source):
        rows = Rows(source, split, read_jsonl(source), is_file=True)
    else:
        rows = Rows(source, split, _load_hub(source, split), is_file=False)
    if not rows.rows:
        raise DataError(f"{source}: no rows")
    return rows


def _load_hub(name: str, split: str) -> list[dict]:
    import datasets  # heavy, and only needed when the machine is online

    repo, _, config = name.partition(":")
    try:
        dataset = datasets.load_dataset(repo, config or None, split=split)
    except Exception as e:
        raise DataError(f"cannot load hub dataset {name!r}, split {split!r}: {e}") from e
    return [dict(row) for row in dataset]


def text_field(row: dict, names: tuple[str, ...]) -> str:
    """The first of `names` that the row has; it must be a non-empty string."""
    for name in names:
        if name in row:
            value = row[name]
            if not isinstance(value, str) or not value.strip():
                raise DataError(f"field `{name}` must be a non-empty string, got {value!r:.80}")
            return value
    raise DataError(f"missing field `{names[0]}`" + (f" (or {', '.join(names[1:])})" if names[1:] else ""))


def problem_id(row: dict, index: int, prefix: str) -> str:
    """The row's own `id` (or `unique_id`) when it has one, else `<prefix>-<index>`: stable for a given file."""
    for name in ("id", "unique_id"):
        if name in row:
            value = row[name]
            if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
                raise DataError(f"field `{name}` must be a non-empty string or an integer, got {value!r:.80}")
            return str(value)
    return f"{prefix}-{index}"


def build_problems(rows: Rows, make: Callable[[dict, int], dict]) -> list[dict]:
    """`make(row, index)` for every row.

    A `DataError` from `make` gets the row's location; a `SkippedRow` is left out and logged with its location.
    """
    problems, first_index, skipped = [], {}, []
    for index, row in enumerate(rows.rows):
        try:
            problem = make(row, index)
        except DataError as e:
            raise DataError(f"{rows.where(index)}: {e}") from None
        except SkippedRow as e:
            skipped.append(f"{rows.where(index)}: {e}")
            continue
        # Ids key every later stage (samples, pairs, eval rows): a repeat is an error naming both rows.
        if problem["id"] in first_index:
            earlier = rows.where(first_index[problem["id"]])
            raise DataError(f"{rows.where(index)}: id {problem['id']!r} repeats the id of {earlier}")
        first_index[problem["id"]] = index
        problems.append(problem)
    if skipped:
        listing = "\n  ".join(skipped)
        logger.warning("%s: left out %d of %d rows:\n  %s", rows.source, len(skipped), len(rows.rows), listing)
    return problems
