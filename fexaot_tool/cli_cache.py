"""``fexaot`` subcommands of the cache layer: compile, bundle, inspect, key."""

from __future__ import annotations


def register(sub) -> None:
    pass
