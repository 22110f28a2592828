"""fexaot: ahead-of-time AArch64 translation caches for x86-64 ELF files.

The package is layered (imports point down): cli -> bench/validate -> runtime
-> cache -> translate -> discover -> profile -> elf.  See docs/architecture.md.
"""

__version__ = "0.1.0"
