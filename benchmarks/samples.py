"""The images the benchmarks send: a 512x512 PNG, the largest RGBA PNG of the real data, a JPEG, and
the real test split as a mix.

They come from the Kaggle chest CT set beside the repository (`<repo>/../shared/data/...`) and are
written to a work folder outside the repository; where that set is absent (a fresh machine), the
built-in synthetic CT generator stands in, so the benchmarks still run.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "chest-ct-kaggle" / "Data"
FORMATS = ("png512", "rgba_large", "jpeg")


@dataclass(frozen=True)
class Sample:
    name: str  # one of FORMATS
    path: Path
    origin: str  # where the bytes came from, for the report
    width: int
    height: int
    mode: str
    bytes: int


def write_samples(folder: Path, data: Path = DATA) -> dict[str, Sample]:
    """The three benchmark images, written into `folder`, keyed by FORMATS."""
    folder.mkdir(parents=True, exist_ok=True)
    made = _from_real(data) if data.is_dir() else _from_synthetic()
    samples = {}
    for name, (blob, origin) in made.items():
        path = folder / f"{name}.{'jpg' if name == 'jpeg' else 'png'}"
        path.write_bytes(blob)
        with Image.open(path) as image:
            samples[name] = Sample(name, path, origin, image.width, image.height, image.mode, len(blob))
    return samples


def real_mix(data: Path = DATA, split: str = "test") -> list[Path]:
    """Every real image of one split (sorted): the 'real files' load mix; empty where the set is absent."""
    root = data / split
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def _from_real(data: Path) -> dict[str, tuple[bytes, str]]:
    files = sorted(p for p in data.rglob("*") if p.is_file())
    rgba, jpegs = [], []
    for path in files:
        with Image.open(path) as image:
            if image.format == "PNG" and image.mode == "RGBA":
                rgba.append((image.width * image.height, path))
            elif image.format == "JPEG":
                jpegs.append(path)
    if not rgba or not jpegs:
        raise FileNotFoundError(f"{data} has no RGBA PNG or no JPEG: not the Kaggle chest CT layout")
    largest = max(rgba, key=lambda item: (item[0], str(item[1])))[1]
    first_test = next(p for _, p in sorted(rgba, key=lambda item: str(item[1])) if "test" in p.parts)
    with Image.open(first_test) as image:
        # A CT slice is stored grey at 512x512; the Kaggle files are screenshots, so resample one.
        grey = image.convert("L").resize((512, 512), Image.Resampling.BILINEAR)
    return {
        "png512": (_png(grey), f"{_rel(first_test, data)} as grey, resized to 512x512"),
        "rgba_large": (largest.read_bytes(), _rel(largest, data)),
        "jpeg": (jpegs[0].read_bytes(), _rel(jpegs[0], data)),
    }


def _from_synthetic() -> dict[str, tuple[bytes, str]]:
    from training.synthetic import generate_slice  # numpy + scipy only; needed only without the real set

    slice512 = Image.fromarray(generate_slice("adenocarcinoma", 7, 512))
    large = Image.fromarray(generate_slice("normal", 8, 768)).convert("RGBA")
    jpeg = io.BytesIO()
    Image.fromarray(generate_slice("normal", 9, 512)).convert("RGB").save(jpeg, format="JPEG", quality=90)
    return {
        "png512": (_png(slice512), "synthetic CT slice, 512x512 grey"),
        "rgba_large": (_png(large), "synthetic CT slice, 768x768 RGBA"),
        "jpeg": (jpeg.getvalue(), "synthetic CT slice, 512x512 RGB JPEG"),
    }


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _rel(path: Path, data: Path) -> str:
    return f"Data/{path.relative_to(data)}"
