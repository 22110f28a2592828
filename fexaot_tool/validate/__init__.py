"""Validation layer: proofs that fexaot's answers are the real system's answers.

Each check runs a real program (the host's dynamic loader, the runtime) next to
the fexaot code that claims to predict it, and reports every disagreement.
May import any layer below it (elf, cache, translate, runtime); nothing imports it
but the CLI.
"""
