"""deploy/strip_elf.py: the image's shared objects lose their symbol tables and still load."""

from __future__ import annotations

import ctypes
import importlib.util
import shutil
import sys
from pathlib import Path

import msgspec
import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("strip_elf", ROOT / "deploy/strip_elf.py")
strip_elf = importlib.util.module_from_spec(spec)
spec.loader.exec_module(strip_elf)


def section_names(data: bytes) -> list[str]:
    head = strip_elf.EHDR.unpack_from(data)
    shoff, shnum, shstrndx = head[6], head[12], head[13]
    sections = [strip_elf.SHDR.unpack_from(data, shoff + i * strip_elf.SHDR.size) for i in range(shnum)]
    names = data[sections[shstrndx][4] : sections[shstrndx][4] + sections[shstrndx][5]]
    return [strip_elf._name(names, s[0]) for s in sections]


@pytest.mark.skipif(sys.platform != "linux", reason="ELF files")
def test_a_stripped_extension_is_smaller_and_still_loads(tmp_path: Path) -> None:
    original = next(Path(msgspec.__file__).parent.glob("_core*.so"))
    copy = tmp_path / "sub" / original.name
    copy.parent.mkdir()
    shutil.copy2(original, copy)
    data = copy.read_bytes()
    if ".symtab" not in section_names(data):
        pytest.skip("this msgspec build is already stripped")

    strip_elf.main([str(tmp_path)])
    stripped = copy.read_bytes()
    # Smaller, and the loaded bytes after the ELF header (whose section-table fields change) untouched.
    assert len(stripped) < len(data) and stripped[64 : len(stripped) // 2] == data[64 : len(stripped) // 2]
    names = section_names(stripped)
    assert ".symtab" not in names and ".dynsym" in names and not any(n.startswith(".debug") for n in names)
    ctypes.CDLL(str(copy))  # the dynamic loader maps and links it
    assert strip_elf.strip(stripped) is None  # nothing left to strip: the file is not rewritten again


def test_files_that_are_not_elf_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "fake.so").write_bytes(b"not an ELF file")
    strip_elf.main([str(tmp_path)])
    assert (tmp_path / "fake.so").read_bytes() == b"not an ELF file"
