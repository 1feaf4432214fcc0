"""What fills an image, in MB by part: the OS files, Python and its standard library, each big
package of the venv (with the libraries its wheel bundles), the service and the model.

python3 deploy/image_sizes.py ROOT      ROOT: an image's root, e.g. $(podman image mount TAG) as root

Sizes are file bytes (as `podman image inspect` counts them), not disk blocks.
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from pathlib import Path

# Top-level names in site-packages (folders, modules, dist-info, wheel-bundled .libs) by part.
PARTS = {
    "onnxruntime": r"onnxruntime|protobuf|google|flatbuffers",
    "numpy + OpenBLAS": r"numpy",
    "pillow": r"PIL|pillow",
    "pydicom + pylibjpeg plugins": r"pydicom|pylibjpeg|_?libjpeg|_?openjpeg",
    "litestar + deps (uvicorn, msgspec, ...)": (
        r"litestar|msgspec|multidict|multipart|anyio|sniffio|h11|httpx|httpcore|idna|certifi|click|uvicorn"
        r"|_?yaml|pyyaml|typing_extensions|packaging|polyfactory|faker|rich|pygments|markdown_it|mdurl"
    ),
    "prometheus_client": r"prometheus_client",
}


def part_of(path: str, site: str | None, stdlib: str | None) -> str:
    if path.startswith("app/models/"):
        return "model (models/)"
    if path.startswith("app/"):
        return "service (/app/service, .pyc)"
    if site and path.startswith(site + "/"):
        top = path[len(site) + 1 :].split("/")[0]
        for part, pattern in PARTS.items():
            if re.match(rf"({pattern})([-._].*)?$", top, re.IGNORECASE):
                return part
        return "other site-packages"
    if path.startswith("opt/venv/"):
        return "venv (other)"
    if stdlib and (path.startswith(stdlib + "/") or re.match(r"usr/(local/)?bin/python3", path)):
        return "Python (interpreter + stdlib)"
    if re.match(r"usr/(local/)?lib/libpython3", path):
        return "Python (interpreter + stdlib)"
    return "base OS (libs, /etc, tools)"


def main(root: str) -> None:
    top = Path(root)
    site = next((str(p.relative_to(top)) for p in top.glob("opt/venv/lib/python3*/site-packages")), None)
    stdlib = next((str(p.relative_to(top)) for p in top.glob("usr/*lib/python3.[0-9]*") if p.is_dir()), None)
    stdlib = stdlib or next((str(p.relative_to(top)) for p in top.glob("usr/local/lib/python3.[0-9]*")), None)
    sizes: Counter[str] = Counter()
    for folder, _, names in os.walk(top):
        for name in names:
            path = Path(folder, name)
            if not path.is_symlink():
                sizes[part_of(str(path.relative_to(top)), site, stdlib)] += path.stat().st_size
    for part, size in sizes.most_common():
        print(f"{size / 1e6:8.1f}  {part}")
    print(f"{sum(sizes.values()) / 1e6:8.1f}  total")


if __name__ == "__main__":
    main(sys.argv[1])
