"""Benchmarks: measure builds and runs and print the numbers.

Built on the layers below and on the SCons front end run as a subprocess;
nothing imports this package but the CLI.
"""
