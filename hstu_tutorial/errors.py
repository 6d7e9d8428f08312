"""The project's own errors: bad input a learner can fix (config, data, checkpoint, dataset name).

The command line prints one line for these, `error: <message>`, and exits with status 2 (`--debug` shows
the traceback); in a notebook they read like any exception. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class HSTUError(Exception):
    """Base of every error the project raises for input it cannot use; the message says what to do."""


class ConfigError(HSTUError, ValueError):
    """A config file, a `--set` override or a config name that cannot be used."""


class DataError(HSTUError):
    """A dataset name, folder or file that cannot be used (missing, unreadable, read-only, malformed)."""


class CheckpointError(HSTUError):
    """A checkpoint that cannot be loaded: truncated, not this project's, or for another model/config."""
