"""User-facing errors.

A :class:`SrkitError` carries a message meant for the person at the terminal: one line that names
the file (when there is one) and the cause. The command line prints it without a traceback (unless
``--debug``) and exits non-zero; the Python API lets it propagate like any exception.
"""

from __future__ import annotations

import os


class SrkitError(Exception):
    """An error caused by the user's input or environment, reported as one line."""

    exit_code: int = 2

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(SrkitError):
    """A file or folder given as input is missing, unreadable, corrupt or of the wrong kind."""


class ConfigError(SrkitError):
    """A configuration key or value is unknown or invalid."""


class CheckpointError(SrkitError):
    """A checkpoint cannot be loaded safely or does not fit the model."""


class OutputError(SrkitError):
    """An output path cannot be written (missing or read-only folder, existing file, ...)."""
