"""Read one named section out of an ELF file without loading it.

Artifacts built for another machine (aarch64, CUDA hosts) cannot be ``dlopen``-ed here, but
their signature must still be readable, so we parse the section table directly.
"""

from __future__ import annotations

import struct
from pathlib import Path


def read_section(path: str | Path, name: str) -> bytes | None:
    """Return the bytes of section ``name`` in ELF file ``path``, or None if absent/not ELF."""
    data = Path(path).read_bytes()
    if len(data) < 64 or data[:4] != b"\x7fELF":
        return None
    is64 = data[4] == 2
    endian = "<" if data[5] == 1 else ">"
    try:
        if is64:
            shoff, = struct.unpack_from(endian + "Q", data, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 0x3A)
            entry = endian + "IIQQQQIIQQ"
        else:
            shoff, = struct.unpack_from(endian + "I", data, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 0x2E)
            entry = endian + "IIIIIIIIII"
        sections = [struct.unpack_from(entry, data, shoff + i * shentsize) for i in range(shnum)]
        # Fields: name, type, flags, addr, offset, size, ...
        strtab = sections[shstrndx]
        names = data[strtab[4] : strtab[4] + strtab[5]]
        for sec in sections:
            end = names.index(b"\0", sec[0])
            if names[sec[0] : end].decode(errors="replace") == name:
                return data[sec[4] : sec[4] + sec[5]]
    except (struct.error, IndexError, ValueError):
        return None
    return None


def machine(path: str | Path) -> str | None:
    """The ELF ``e_machine`` of ``path`` as a short name (x86_64, aarch64, ...)."""
    head = Path(path).read_bytes()[:20]
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    endian = "<" if head[5] == 1 else ">"
    code, = struct.unpack_from(endian + "H", head, 18)
    return {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm", 0x03: "x86"}.get(code, f"elf-{code:#x}")
