"""Assemble the runtime image's root filesystem: this Python, its standard library, the venv, the
shared libraries they load, and the few /etc files a non-root process needs; nothing else.

python3 runtime_rootfs.py ROOT VENV     run by the base's own Python in the build stage

The final stage is `FROM scratch` + ROOT, so the base's package manager, shell, coreutils, perl,
locales and iconv modules (about 90 MB of a 134 MB bookworm base) never reach the image. The libraries
come from `ldd` on every ELF file kept, so the same script serves the local Debian base (Python in
/usr) and python:3.11-slim (Python in /usr/local, libpython shared); symlinks are recreated as they
are (merged /usr: /lib -> usr/lib). Debian's package records of the files copied are kept in
/var/lib/dpkg/status, so image scanners still see which Debian packages the libraries came from.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

# Standard-library packages the service never imports: the test suite, IDLE and Tk, 2to3, pip's
# bootstrap, pydoc's help topics, distutils (gone in 3.12), turtle's demos, the sqlite/curses/dbm
# front ends whose C modules are dropped below. A missing one fails at import, never silently.
STDLIB_DROP = {
    "test", "idlelib", "tkinter", "turtledemo", "lib2to3", "ensurepip", "pydoc_data", "distutils",
    "sqlite3", "curses", "dbm", "site-packages", "dist-packages",
}  # fmt: skip
# C modules of lib-dynload (and the libraries they alone link: libsqlite3, ncurses, readline, gdbm;
# nis, deprecated, alone links libnsl, libtirpc and Kerberos: 2 MB).
DYNLOAD_DROP = re.compile(r"^(_test|_ctypes_test|_xxtestfuzz|xx|_tkinter|readline|_curses|_dbm|_gdbm|_sqlite3|nis)")
# Loaded by glibc with dlopen, which ldd cannot see: libgcc_s unwinds a thread that exits or is cancelled.
ALWAYS = ("libgcc_s.so.1",)
ETC = {
    "etc/passwd": "root:x:0:0:root:/root:/sbin/nologin\napp:x:10001:10001::/nonexistent:/sbin/nologin\n",
    "etc/group": "root:x:0:\napp:x:10001:\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
    "etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",  # container runtimes mount their own over it
}


class Root:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: set[str] = set()  # real paths copied, for the package records

    def copy(self, path: str) -> None:
        """Copy `path` to the same place under the root, recreating each symlink on the way."""
        current = Path("/")
        parts = Path(path).parts[1:]
        for i, part in enumerate(parts):
            step = current / part
            if step.is_symlink():
                dest = self.root / step.relative_to("/")
                target = os.readlink(step)
                if not dest.is_symlink():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.symlink_to(target)
                resolved = Path(os.path.normpath(step.parent / target))
                self.copy(str(resolved.joinpath(*parts[i + 1 :])))
                return
            current = step
        dest = self.root / current.relative_to("/")
        if current.is_dir():
            self.tree(current)
        elif not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(current, dest)
            self.files.add(str(current))

    def tree(self, top: Path, keep=lambda path: True) -> None:
        for folder, dirs, names in os.walk(top):
            here = Path(folder)
            dirs[:] = [d for d in dirs if keep(here / d)]
            (self.root / here.relative_to("/")).mkdir(parents=True, exist_ok=True)
            for name in names + [d for d in dirs if (here / d).is_symlink()]:
                if keep(here / name):
                    self.copy(str(here / name))


def is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def needed_libraries(elves: list[Path]) -> set[str]:
    """The absolute paths ldd resolves for `elves`; an unresolved library stops the build."""
    found: set[str] = set()
    for elf in elves:
        out = subprocess.run(["ldd", str(elf)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "not found" in line:
                sys.exit(f"runtime_rootfs: {elf} needs {line.split()[0]}, which the base lacks")
            match = re.search(r"(/\S+) \(0x", line)
            if match:
                found.add(match.group(1))
    return found


def beside_libc(found: set[str], name: str) -> str:
    """`name` from the folder of the libc that ldd found."""
    libc = next(p for p in found if Path(p).name == "libc.so.6")
    path = Path(libc).parent / name
    if not path.exists():
        sys.exit(f"runtime_rootfs: no {path} in the base")
    return str(path)


def package_records(root: Root) -> str:
    """The dpkg status paragraphs of the Debian packages that own a file copied."""
    info = Path("/var/lib/dpkg/info")
    if not info.is_dir():
        return ""
    owners = set()
    for listing in info.glob("*.list"):
        for line in listing.read_text(errors="replace").splitlines():
            if os.path.realpath(line) in root.files:
                owners.add(listing.stem.split(":")[0])
                break
    paragraphs = Path("/var/lib/dpkg/status").read_text().split("\n\n")
    kept = [p for p in paragraphs if (m := re.match(r"Package: (\S+)", p)) and m.group(1) in owners]
    return "\n\n".join(kept) + "\n"


def main(root_dir: str, venv_dir: str) -> None:
    root = Root(Path(root_dir))
    stdlib = Path(sysconfig.get_path("stdlib"))
    dynload = Path(sysconfig.get_path("platstdlib")) / "lib-dynload"

    def keep(path: Path) -> bool:
        if (path.parent == stdlib and path.name in STDLIB_DROP) or path.name.startswith("config-3"):
            return False
        if re.search(r"\.opt-[12]\.pyc$", path.name):  # read only under python -O, which nothing runs
            return False
        return not (path.parent == dynload and DYNLOAD_DROP.match(path.name))

    root.copy(sys.executable)
    root.tree(stdlib, keep)
    if not dynload.is_relative_to(stdlib):
        root.tree(dynload, keep)
    root.tree(Path(venv_dir))
    elves = [Path(f) for f in sorted(root.files) if is_elf(Path(f))]
    libraries = needed_libraries(elves)
    for lib in sorted(libraries | {beside_libc(libraries, name) for name in ALWAYS}):
        if not lib.startswith(venv_dir + "/"):
            root.copy(lib)
    if Path("/etc/ld.so.cache").exists():
        root.copy("/etc/ld.so.cache")
    for path, text in ETC.items():
        (root.root / path).parent.mkdir(parents=True, exist_ok=True)
        (root.root / path).write_text(text)
    records = package_records(root)
    if records.strip():
        (root.root / "var/lib/dpkg").mkdir(parents=True, exist_ok=True)
        (root.root / "var/lib/dpkg/status").write_text(records)
    (root.root / "tmp").mkdir(mode=0o1777, exist_ok=True)
    os.chmod(root.root / "tmp", 0o1777)
    size = sum(f.stat().st_size for f in root.root.rglob("*") if f.is_file() and not f.is_symlink())
    print(f"runtime_rootfs: {size / 1e6:.1f} MB, {len(elves)} ELF files, Debian packages: {records.count('Package: ')}")


if __name__ == "__main__":
    main(*sys.argv[1:])
