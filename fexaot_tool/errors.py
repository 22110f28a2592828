"""Errors a user can cause.  The CLI prints ``str(error)`` as one line and exits 1.

Every message names the file it concerns and says what is wrong with it.
"""

from __future__ import annotations


class FexaotError(Exception):
    """Base of every error caused by input rather than by a bug."""

    def __init__(self, path: str | None, problem: str):
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}" if path else problem)
