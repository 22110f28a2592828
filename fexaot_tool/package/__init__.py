"""Packaging layer: caches as a distribution ships and keeps them.

Reads a rootfs's dpkg database (which ELF files a package installed), lays
per-object caches out under runtime lookup names in a cache directory with an
index, collects stale and least-recently-used caches under a lock protocol the
runtime shares, and writes reproducible ``.deb`` and ``.tar.zst`` archives.
May import ``cache``, ``elf`` and ``errors``; nothing below imports it.
"""
