"""``fexaot`` subcommands of the ELF layer: closure, check-loader."""

from __future__ import annotations


def register(sub) -> None:
    pass
