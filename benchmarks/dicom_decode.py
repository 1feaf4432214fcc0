"""Decode + preprocess time of a 512x512 CT slice: DICOM uncompressed, DICOM JPEG 2000 and PNG (median).

Run once by hand (`python -m benchmarks.dicom_decode`); the figures go into notes, not into a test.
Needs pydicom's bundled test files and pylibjpeg-openjpeg's encoder (both come with the serve extra).
"""

from __future__ import annotations

import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEG2000Lossless

from service.card import InputSpec
from service.inputs.imaging import load_tensor

SPEC = InputSpec(size=128, mean=0.2, std=0.25)  # the default model's input (params.yaml)
REAL_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "chest-ct-kaggle" / "Data"


def encoded(ds: pydicom.Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def files() -> dict[str, bytes]:
    """One real 512x512 CT slice (pydicom's 693_J2KI.dcm) in each encoding."""
    source = pydicom.dcmread(get_testdata_file("693_J2KI.dcm", download=False))
    source.decompress()  # now native (uncompressed) pixel data
    native = encoded(source)
    lossless = pydicom.dcmread(io.BytesIO(native))
    lossless.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    grey = np.asarray(Image.open(io.BytesIO(_png_of(native))))
    assert grey.shape == (512, 512)
    assert source.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    with open(get_testdata_file("693_J2KI.dcm", download=False), "rb") as f:
        bundled = f.read()
    assert pydicom.dcmread(io.BytesIO(bundled)).file_meta.TransferSyntaxUID == JPEG2000
    return {
        "DICOM uncompressed (int16)": native,
        "DICOM JPEG 2000 lossless (pylibjpeg-openjpeg)": encoded(lossless),
        "DICOM JPEG 2000 (bundled 693_J2KI.dcm)": bundled,
        "PNG grey (the same slice, lung window)": _png_of(native),
    }


def _png_of(dicom: bytes) -> bytes:
    from service.inputs.imaging import decode

    out = io.BytesIO()
    decode(dicom).save(out, format="PNG")
    return out.getvalue()


def median_ms(data: bytes, runs: int) -> float:
    load_tensor(data, SPEC)  # warm: imports, plugin discovery
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        load_tensor(data, SPEC)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000.0


def real_files(root: Path = REAL_DATA) -> dict[str, bytes]:
    """A real Kaggle slice resized to 512x512 and inverted into HU (when ../shared/data is there): the
    bundled CT compresses to 4 KB, which flatters every codec."""
    pngs = sorted(root.glob("test/*/*.png"))
    if not pngs:
        return {}
    with Image.open(pngs[0]) as image:
        grey = np.asarray(image.convert("L").resize((512, 512), Image.Resampling.BILINEAR))
    hu = -600.0 - 750.0 + grey.astype(np.float64) / 255.0 * 1500.0
    ds = pydicom.dcmread(io.BytesIO(files()["DICOM uncompressed (int16)"]))
    ds.PixelData = np.rint(hu - float(ds.RescaleIntercept)).astype(np.int16).tobytes()
    native = encoded(ds)
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    png = io.BytesIO()
    Image.fromarray(grey, mode="L").save(png, format="PNG")
    return {
        "real slice: DICOM uncompressed": native,
        "real slice: DICOM JPEG 2000 lossless": encoded(ds),
        "real slice: PNG grey": png.getvalue(),
    }


def main(runs: int = 50) -> None:
    print(f"decode + preprocess to {SPEC.size}x{SPEC.size}, median of {runs} runs, one thread")
    for name, data in {**files(), **real_files()}.items():
        print(f"{name:48s} {len(data):>8d} bytes  {median_ms(data, runs):7.2f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
