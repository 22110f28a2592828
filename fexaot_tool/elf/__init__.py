"""ELF layer: read x86-64 ELF files, resolve paths inside a rootfs, and compute a
program's dependency closure as the glibc dynamic loader would.

Imports nothing else from fexaot_tool but ``errors``; it knows nothing of caches.
"""

from fexaot_tool.elf.reader import (
    CorruptElfError,
    ElfError,
    ElfInfo,
    NotElfError,
    Segment,
    UnsupportedElfError,
    is_x86_64_elf,
    read_elf,
)

__all__ = [
    "CorruptElfError", "ElfError", "ElfInfo", "NotElfError", "Segment",
    "UnsupportedElfError", "is_x86_64_elf", "read_elf",
]
