"""Errors a user can act on. The CLI prints them as one line (what, where, what to do) and exits with code 2."""

import re


class ConfigError(ValueError):
    """A configuration the user must fix; the message names the key or file."""


class DataError(ValueError):
    """Input data the user must fix; the message names the file and line."""


class StageError(RuntimeError):
    """A stage cannot run with what it was given (missing inputs, nothing to train on)."""


class ModelLoadError(ValueError):
    """A model directory an engine cannot load; the message names the directory and the reason."""


USER_ERRORS = (ConfigError, DataError, ModelLoadError, StageError)
"""What the CLI prints as one line: errors whose message says what to do."""

ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): \S")
PYDANTIC_LINE = re.compile(r"^Value error, (.*?)(?: \[type=.*)?$")


def root_cause(error: BaseException) -> str:
    """The first `SomeError: message` line of the traceback Ray carries over from the actor (the engine's own
    error, before Ray Data's wrappers), or the reason of a pydantic validation error (vLLM's config classes), or
    else the message's first line: what the user can act on, without the tracebacks."""
    lines = [line.strip() for line in str(error).splitlines()]
    reasons = [m.group(1) for line in lines if (m := PYDANTIC_LINE.match(line))]
    causes = reasons or [line for line in lines if ERROR_LINE.match(line) and not line.startswith("ray.")]
    return causes[0] if causes else next((line for line in lines if line), type(error).__name__)
