"""x86-64 blocks -> AArch64 code: lowering table, flag liveness, a machine IR and its passes, table-driven encoder.

A pure function of (guest bytes, block list, configuration): no file names,
clocks or host paths.  May import ``discover``'s data types and ``elf``; never
``cache`` or ``runtime``.  docs/abi.md is the contract of the generated code,
docs/translator.md explains the parts.
"""

from fexaot_tool.translate.block import (
    BlockRequest, GuestCode, ModuleTranslation, TranslatedBlock, UntranslatedBlock, translate_block,
    translate_module,
)
from fexaot_tool.translate.builder import REASON_NAMES

# Bumped whenever the code generated for the same input changes (new lowering,
# new relocation kind, new reason code); cache.key puts it in ConfigId.
TRANSLATOR_VERSION = 5

__all__ = ["BlockRequest", "GuestCode", "ModuleTranslation", "REASON_NAMES", "TRANSLATOR_VERSION", "TranslatedBlock",
           "UntranslatedBlock", "translate_block", "translate_module"]
