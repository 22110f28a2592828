"""Cache layer: module and configuration identities (key), the cache file format,
its atomic deterministic writer, its never-trusting reader, and inspection.

Imports only ``elf`` and ``errors`` from fexaot_tool.  docs/cache-format.md is
the byte-by-byte specification of the file.
"""

from fexaot_tool.cache.format import ElfFacts, Filter, SectionKind
from fexaot_tool.cache.key import (
    FileIdCache,
    ModuleIdentity,
    TranslatorConfig,
    config_id,
    lookup_name,
    module_identity,
)
from fexaot_tool.cache.reader import CachedModule, CacheFile, CacheRejected, check_module_matches
from fexaot_tool.cache.writer import ModuleImage, write_bundle, write_cache

__all__ = [
    "CacheFile", "CacheRejected", "CachedModule", "ElfFacts", "FileIdCache", "Filter",
    "ModuleIdentity", "ModuleImage", "SectionKind", "TranslatorConfig", "check_module_matches",
    "config_id", "lookup_name", "module_identity", "write_bundle", "write_cache",
]
