"""Exceptions raised by the kvsize core.

The CLI turns every `KvsizeError` into one line on stderr and an exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class KvsizeError(Exception):
    """Base class for errors caused by user input or user files."""

    exit_code = 2


class InvalidInputError(KvsizeError):
    """A command-line value is malformed or out of range."""


class SpecError(KvsizeError):
    """A model or GPU spec file is malformed or inconsistent."""


class NotFoundError(KvsizeError):
    """A model or GPU name matches no spec in the catalog.

    `helpful` marks a message that says more than "not found" (close names,
    an ambiguity, a file problem), which a caller trying several kinds keeps.
    """

    def __init__(self, message: str, helpful: bool = False) -> None:
        super().__init__(message)
        self.helpful = helpful
