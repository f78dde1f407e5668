"""Errors a user can act on. The CLI prints them as one line (what, where, what to do) and exits with code 2."""


class ConfigError(ValueError):
    """A configuration the user must fix; the message names the key or file."""


class DataError(ValueError):
    """Input data the user must fix; the message names the file and line."""


class StageError(RuntimeError):
    """A stage cannot run with what it was given (missing inputs, nothing to train on)."""


class ModelLoadError(ValueError):
    """A model directory an engine cannot load; the message names the directory and the reason."""
