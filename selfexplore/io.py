"""Run-directory I/O: JSON Lines with atomic writes, and stage manifests.

Every write goes to a temporary file that is renamed into place, so a crash never leaves a half file that
looks finished. A stage is done when its `manifest.json` exists and its fingerprint matches.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from selfexplore.errors import DataError


def read_jsonl(path: str | Path) -> list[dict]:
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    """The rows of a JSON Lines file, one line in memory at a time."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{line_no}: malformed JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
            yield row


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write `rows` to `path` atomically, one row in memory at a time."""
    with atomic_open(path) as f:
        for row in rows:
            f.write(json_line(row))


def json_line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_json(path: str | Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def atomic_write(path: str | Path, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


@contextmanager
def atomic_open(path: str | Path) -> Iterator[TextIO]:
    """A text file to write `path` through: it appears, whole, only when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
