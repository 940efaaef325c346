"""unlearnkit's own errors: a bad input, found before any compute, with the bad value and what is accepted.

Every class is a ``ValueError`` (code that catches ``ValueError`` keeps working); :class:`BadTypeError` is also a
``TypeError``. The command line turns any of them into a one-line message and exit status 2.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["UnlearnkitError", "BadTypeError", "BadFileError"]


class UnlearnkitError(ValueError):
    """A bad input value; the message names it and says what is accepted."""


class BadTypeError(UnlearnkitError, TypeError):
    """An input of the wrong type (a string where a number belongs, a float where an integer belongs)."""


class BadFileError(UnlearnkitError):
    """A file that cannot be used as what it was given for: corrupt, truncated, another format or architecture, or
    refused for safety (a pickle, a folder that carries code). ``path`` is the file; the message names it."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
