"""The terminal: our own lines and progress bars there, what the libraries print in the run's log files.

    with console.session(run_dir.run_log, verbose=False):     # around a command (the CLI)
        console.say("[sft] running")
        with console.log_to(run_dir.stage_log("sft")):        # while a stage runs
            with console.Progress("training", unit="step") as bar:
                bar.update(12, total=60, note="loss 0.91")

Inside a session, file descriptors 1 and 2 of the process point at the current log file, so Ray (its own lines
and its copy of every worker's output), Ray Data, DeepSpeed, transformers, vLLM and C extensions all write
there, whatever handlers they set up; our lines go to duplicates of the terminal's descriptors taken when the
session began. With `verbose` nothing moves and everything shares the terminal. On a terminal, progress is a live
`tqdm` bar; elsewhere (CI, a Ray job's log, `--verbose`) a plain line every `LINE_EVERY_S` seconds at most, with
no carriage returns or colours. SELFEXPLORE_QUIET=1 turns progress off (the tests that read the output).
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

LINE_EVERY_S = 60.0
"""Away from a terminal, the shortest time between two progress lines: a long stage leaves a line a minute in a
job's log, a short one none but its end."""


@dataclass
class _Session:
    out: TextIO | None = None
    """Our stdout and stderr while a session redirects the process's own; None: sys.stdout / sys.stderr."""
    err: TextIO | None = None
    log: Path | None = None
    """The log file that descriptors 1 and 2 point at now; None when nothing is redirected."""
    verbose: bool = False


_session = _Session()


def say(line: str) -> None:
    """A line of ours on the terminal (stdout)."""
    _write(_session.out or sys.stdout, line)


def warn(line: str) -> None:
    """A line the user must see even when the output is piped (stderr)."""
    _write(_session.err or sys.stderr, line)


def _write(stream: TextIO, line: str) -> None:
    tqdm.write(line, file=stream)  # clears and redraws a live bar around the line
    stream.flush()


@contextmanager
def session(log: Path, verbose: bool = False) -> Iterator[None]:
    """Everything the process prints goes to `log` (and the files `log_to` names) until the block ends, except our
    own lines; with `verbose`, everything stays on the terminal."""
    if verbose:
        _session.verbose = True
        try:
            yield
        finally:
            _session.verbose = False
        return
    _session.out, _session.err = _own(sys.stdout), _own(sys.stderr)
    try:
        with log_to(log):
            yield
    finally:
        for ours, theirs in ((_session.out, sys.stdout), (_session.err, sys.stderr)):
            if ours is not theirs:
                ours.close()
        _session.out = _session.err = None


def _own(stream: TextIO) -> TextIO:
    """A stream onto where `stream` writes now that stays there when descriptors 1 and 2 move: a duplicate of its
    descriptor, or `stream` itself when it has none (pytest's capture)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    stream.flush()
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding=stream.encoding or "utf-8", errors="replace")


@contextmanager
def log_to(path: Path) -> Iterator[Path | None]:
    """Inside a session, point descriptors 1 and 2 at `path` (appending) until the block ends, then back; yields the
    file, or None when nothing is redirected (no session, or verbose)."""
    if _session.out is None:
        yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved, previous = (os.dup(1), os.dup(2)), _session.log
    with path.open("a", encoding="utf-8") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    _session.log = path
    try:
        yield path
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, target in zip(saved, (1, 2)):
            os.dup2(fd, target)
            os.close(fd)
        _session.log = previous


def log_file() -> Path | None:
    """The file the process's output goes to now; None when it goes to the terminal."""
    return _session.log


def log_exception() -> None:
    """The traceback of the exception being handled, into the current log file (on stderr when there is none)."""
    if _session.log is None:
        traceback.print_exc()
        return
    with _session.log.open("a", encoding="utf-8") as f:
        traceback.print_exc(file=f)


class Progress:
    """Progress of `what`: `done` of `total` `unit`s (total may come later), with a short note (e.g. the loss)."""

    def __init__(self, what: str, total: int | None = None, done: int = 0, unit: str = "row"):
        self.what, self.total, self.done, self.unit, self.note = what, total, done, unit, ""
        self.start = self.last_line = time.monotonic()
        self.first: tuple[float, int] | None = None  # (time, done) of the first update: the rate counts from there
        self.lock = threading.Lock()  # a training stage updates it from the thread that follows the workers
        stream = _session.out or sys.stdout
        quiet = os.environ.get("SELFEXPLORE_QUIET") == "1"
        self.stream = None if quiet else stream
        self.bar = None
        if not quiet and not _session.verbose and stream.isatty():
            self.bar = tqdm(total=total, initial=done, desc=f"  {what}", unit=unit, file=stream, leave=False, dynamic_ncols=True)

    def update(self, done: int, total: int | None = None, note: str = "") -> None:
        with self.lock:
            self.done, self.total, self.note = done, total or self.total, note or self.note
            self.first = self.first or (time.monotonic(), done)
            if self.bar is not None:
                self.bar.total = self.total
                self.bar.set_postfix_str(self.note, refresh=False)
                self.bar.update(done - self.bar.n)
            elif self.stream is not None and time.monotonic() - self.last_line >= LINE_EVERY_S:
                self.last_line = time.monotonic()
                _write(self.stream, self.line())

    def line(self) -> str:
        now = time.monotonic()
        fmt = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
        if not self.total:
            fmt = "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"
        # From the first update, not from the start: engines load and training workers start up before it.
        rate = (self.done - self.first[1]) / (now - self.first[0]) if self.first and self.done > self.first[1] else 0.0
        return tqdm.format_meter(
            self.done, self.total, now - self.start, prefix=f"  {self.what}", unit=self.unit, rate=rate, postfix=self.note or None, bar_format=fmt
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
