"""ELF layer: read x86-64 ELF files, resolve paths inside a rootfs, and compute a
program's dependency closure as the glibc dynamic loader would.

Imports nothing else from fexaot_tool but ``errors``; it knows nothing of caches.
"""

from fexaot_tool.elf.closure import (
    DEFAULT_INTERPRETER,
    Closure,
    ClosureResolver,
    FoundBy,
    LoadedObject,
    LoaderConfig,
    MissingLibrary,
    ld_so_conf_dirs,
    resolve_closure,
    substitute_dst,
)
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
from fexaot_tool.elf.rootfs import (
    ROOTFS_PATH,
    PathNotFoundError,
    Resolved,
    Rootfs,
    RootfsError,
    RootfsRequiredError,
    SymlinkLoopError,
    default_rootfs,
)

__all__ = [
    "CorruptElfError", "ElfError", "ElfInfo", "NotElfError", "Segment",
    "UnsupportedElfError", "is_x86_64_elf", "read_elf",
    "ROOTFS_PATH", "PathNotFoundError", "Resolved", "Rootfs", "RootfsError",
    "RootfsRequiredError", "SymlinkLoopError", "default_rootfs",
    "DEFAULT_INTERPRETER", "Closure", "ClosureResolver", "FoundBy", "LoadedObject",
    "LoaderConfig", "MissingLibrary", "ld_so_conf_dirs", "resolve_closure", "substitute_dst",
]
