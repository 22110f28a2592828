"""Profile layer: which guest blocks ran and how often, per module (FileId); merge, summaries, recall.

Profiles are recorded by the runtime and read by the compiler's filters and
people.  Imports only ``errors`` (and xxhash); it knows nothing of how
profiles are recorded or of the codemap it is compared with.
"""

from fexaot_tool.profile.format import (
    MAGIC,
    VERSION,
    CorruptProfileError,
    ModuleProfile,
    Profile,
    ProfileMergeError,
    decode,
    encode,
    make_module,
    make_profile,
    read_profile,
)
from fexaot_tool.profile.merge import merge_profiles
from fexaot_tool.profile.recall import Recall, recall
from fexaot_tool.profile.show import HotBlock, ModuleSummary, summarize

__all__ = [
    "MAGIC", "VERSION", "CorruptProfileError", "ModuleProfile", "Profile", "ProfileMergeError", "decode",
    "encode", "make_module", "make_profile", "read_profile", "merge_profiles", "Recall", "recall",
    "HotBlock", "ModuleSummary", "summarize",
]
