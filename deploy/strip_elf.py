"""Drop the symbol tables and debug sections of the ELF shared objects under the given folders.

python3 strip_elf.py DIR...     rewrites each 64-bit little-endian ELF file in place; prints the saving

The image's build stage has no binutils (python:3.11-slim has none and the build runs offline), so this
does the part of `strip --strip-all` that pays for wheels: `.symtab`, `.strtab`, `.debug_*` and the
relocations of those, which the dynamic loader never reads (it binds through `.dynsym`). A file is
left as it is unless every section dropped lies after all loaded bytes and after every allocated
section's index, so nothing the loader maps moves and `.dynsym`'s section indices stay true.
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
SHDR = struct.Struct("<IIQQQQIIQQ")
PHDR = struct.Struct("<IIQQQQQQ")
SHF_ALLOC, SHF_INFO_LINK = 0x2, 0x40
SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 2, 3, 4, 8, 9


def _name(strtab: bytes, offset: int) -> str:
    return strtab[offset : strtab.index(b"\0", offset)].decode("ascii", "replace")


def strip(data: bytes) -> bytes | None:
    """The stripped file, or None when `data` is not an ELF file this can strip safely."""
    if len(data) < EHDR.size or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    head = list(EHDR.unpack_from(data))
    phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx = head[5], head[6], *head[9:]
    if shoff == 0 or shnum == 0 or shentsize != SHDR.size or shstrndx >= shnum:
        return None
    segments = PHDR.iter_unpack(data[phoff : phoff + phnum * phentsize])
    loaded = max([phoff + phnum * phentsize] + [p[2] + p[5] for p in segments])  # end of the mapped bytes
    sections = [list(SHDR.unpack_from(data, shoff + i * shentsize)) for i in range(shnum)]
    strtab = data[sections[shstrndx][4] : sections[shstrndx][4] + sections[shstrndx][5]]
    names = [_name(strtab, s[0]) for s in sections]

    symtabs = {i for i, s in enumerate(sections) if s[1] == SHT_SYMTAB}
    drop = symtabs | {sections[i][6] for i in symtabs}  # .symtab and the string table it names
    drop |= {i for i, n in enumerate(names) if n.startswith((".debug", ".zdebug"))}
    drop |= {i for i, s in enumerate(sections) if s[1] in (SHT_REL, SHT_RELA) and (s[6] in drop or s[7] in drop)}
    drop.discard(shstrndx)
    drop.discard(0)
    if not drop:
        return None
    last_alloc = max((i for i, s in enumerate(sections) if s[2] & SHF_ALLOC), default=0)
    if any(i <= last_alloc or sections[i][2] & SHF_ALLOC or sections[i][4] < loaded for i in drop):
        return None
    keep = [i for i in range(shnum) if i not in drop]
    if any(sections[i][6] in drop for i in keep):
        return None
    return _rewrite(data, head, sections, keep, loaded)


def _rewrite(data: bytes, head: list, sections: list[list], keep: list[int], loaded: int) -> bytes:
    """The loaded bytes as they are, then the kept unloaded sections and a new section table."""
    index = {old: new for new, old in enumerate(keep)}
    out = bytearray(data[:loaded])
    after = [i for i in keep if i and sections[i][4] >= loaded and sections[i][1] != SHT_NOBITS]
    for i in sorted(after, key=lambda i: sections[i][4]):
        s = sections[i]
        align = max(s[8], 1)
        out += b"\0" * (-len(out) % align)
        start = len(out)
        out += data[s[4] : s[4] + s[5]]
        s[4] = start
    out += b"\0" * (-len(out) % 8)
    head[6], head[12], head[13] = len(out), len(keep), index[head[13]]
    for i in keep:
        s = sections[i]
        if s[1] == SHT_NOBITS and s[4] > len(out):
            s[4] = len(out)
        s[6] = index.get(s[6], 0) if s[6] else 0
        if s[1] in (SHT_REL, SHT_RELA) or s[2] & SHF_INFO_LINK:
            s[7] = index.get(s[7], 0) if s[7] else 0
        out += SHDR.pack(*s)
    out[: EHDR.size] = EHDR.pack(*head)
    return bytes(out)


def main(folders: list[str]) -> None:
    before = after = files = 0
    for folder in folders:
        for path in sorted(Path(folder).rglob("*.so*")):
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            stripped = strip(data)
            if stripped is None:
                continue
            tmp = path.with_name(path.name + ".strip")
            tmp.write_bytes(stripped)
            os.chmod(tmp, path.stat().st_mode)
            os.replace(tmp, path)
            before, after, files = before + len(data), after + len(stripped), files + 1
    print(f"strip_elf: {files} files, {before / 1e6:.1f} -> {after / 1e6:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
