"""DICOM Part 10 CT slices -> Hounsfield units -> the card's window -> the grey image a PNG decodes to.

Everything a file claims is checked from its header before any pixel is decoded: modality, one frame,
size, consistent pixel attributes, a decoder for its transfer syntax, and (service.inputs.dicom_frames)
that compressed data cannot inflate past what the header declares. Refusals carry only our own words and
numbers: no tag value of the file (patient, dates, UIDs, institution) ever reaches a message.
"""

from __future__ import annotations

import io
import logging
import re
import warnings

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, get_decoder
from pydicom.uid import UID

from service.card import DicomWindow
from service.errors import BadRequest, InvalidImage, UnsupportedMediaType
from service.inputs import dicom_frames
from service.inputs.limits import DecodeLimits, check_size

# pydicom quotes element values in its warnings and log records ("Invalid value for VR PN: '<name>'"), and
# the service turns warnings into log lines: value validation off, its logger and warnings silenced, so
# that no tag value can reach a log. Process-wide, like harden_pillow; only pydicom's own output is muted.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
logging.getLogger("pydicom").propagate = False
warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")  # MONOCHROME1: low values are bright, so it is inverted
_BITS_ALLOCATED = (8, 16, 32)
_CODE_STRING = re.compile(r"[A-Z0-9 _]{1,16}")  # the DICOM CS value representation


def decode_dicom(data: bytes, limits: DecodeLimits, window: DicomWindow) -> Image.Image:
    """DICOM Part 10 bytes (already sniffed) -> the 8-bit grey ('L') image of the slice seen through
    `window`; raises BadRequest (malformed), UnsupportedMediaType (no decoder) or InvalidImage (refused)."""
    dicom_frames.check_inflated_size(data, limits)
    ds = read_dataset(data)
    check_header(ds, limits)
    hu = hounsfield(ds)
    grey = window_grey(hu, window)
    if _text(ds, "PhotometricInterpretation") == "MONOCHROME1":
        np.subtract(255, grey, out=grey)
    return Image.fromarray(grey, mode="L")


def read_dataset(data: bytes) -> Dataset:
    """The parsed file, pixel data still encoded."""
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises InvalidDicomError, EOFError, ValueError, struct errors...
        raise BadRequest("the DICOM file is malformed or truncated") from exc


def check_header(ds: Dataset, limits: DecodeLimits) -> None:
    """Everything that can refuse the file without decoding a pixel."""
    if "PixelData" not in ds:  # also what a file cut short in its header looks like
        floating = "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
        raise InvalidImage("float pixel data is not supported" if floating else "the DICOM file has no pixel data")
    check_transfer_syntax(ds)
    check_modality(ds, limits.dicom_modalities)
    frames = _int(ds, "NumberOfFrames", default=1)
    if frames != 1:
        raise InvalidImage(f"the DICOM file has {frames} frames: send one slice per file")
    check_pixel_attributes(ds)
    rows, columns = _int(ds, "Rows"), _int(ds, "Columns")
    check_size(columns, rows, limits)
    check_rescale(ds)
    dicom_frames.check_encoded_frame(ds, rows, columns)


def check_transfer_syntax(ds: Dataset) -> None:
    """415 naming the syntax when no installed decoder reads it."""
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is None:
        raise BadRequest("the DICOM file names no transfer syntax")
    uid = UID(str(uid))
    if not uid.is_valid:
        raise BadRequest("the DICOM transfer syntax UID is malformed")
    try:
        available = get_decoder(uid).is_available
    except NotImplementedError:  # a syntax pydicom has no decoder for at all (video, private)
        available = False
    if not available:
        name = uid.name if uid.is_transfer_syntax else f"{uid} (not a standard transfer syntax)"
        raise UnsupportedMediaType(f"DICOM transfer syntax {name} cannot be decoded by this service")


def check_modality(ds: Dataset, allowed: frozenset[str]) -> None:
    modality = _text(ds, "Modality")
    if modality in allowed:
        return
    if not modality:
        raise InvalidImage("the DICOM file names no Modality")
    # A well-formed code ("MR") is named; anything else in the field is not echoed.
    shown = modality if _CODE_STRING.fullmatch(modality) else "this modality"
    raise InvalidImage(f"DICOM Modality {shown} is not accepted (accepted: {', '.join(sorted(allowed))})")


def check_pixel_attributes(ds: Dataset) -> None:
    """One grey sample per pixel, with bit depths that agree with each other."""
    samples = _int(ds, "SamplesPerPixel")
    if samples != 1:
        raise InvalidImage(f"the DICOM image has {samples} samples per pixel: only grey (1) CT is accepted")
    photometric = _text(ds, "PhotometricInterpretation")
    if photometric not in MONOCHROME:
        shown = photometric if _CODE_STRING.fullmatch(photometric) else "another"
        raise InvalidImage(f"DICOM photometric interpretation {shown} is not accepted (only MONOCHROME1/2)")
    allocated, stored = _int(ds, "BitsAllocated"), _int(ds, "BitsStored")
    if allocated not in _BITS_ALLOCATED:
        raise InvalidImage(f"DICOM BitsAllocated {allocated} is not supported (8, 16 or 32)")
    if not 1 <= stored <= allocated:
        raise InvalidImage(f"DICOM BitsStored {stored} does not fit BitsAllocated {allocated}")
    high_bit = _int(ds, "HighBit", default=stored - 1)
    if high_bit != stored - 1:
        raise InvalidImage(f"DICOM HighBit {high_bit} does not match BitsStored {stored}")
    if _int(ds, "PixelRepresentation") not in (0, 1):
        raise InvalidImage("DICOM PixelRepresentation must be 0 (unsigned) or 1 (signed)")


def check_rescale(ds: Dataset) -> None:
    """RescaleSlope/Intercept, when present, are finite numbers and the slope is not zero."""
    for keyword, default in (("RescaleSlope", 1.0), ("RescaleIntercept", 0.0)):
        value = _float(ds, keyword, default)
        if not np.isfinite(value) or (keyword == "RescaleSlope" and value == 0.0):
            raise InvalidImage(f"DICOM {keyword} is not a usable number")


def hounsfield(ds: Dataset) -> np.ndarray:
    """Stored values -> HU as float32. pydicom's pixel_array applies PixelRepresentation and BitsStored
    (sign extension, unused high bits); apply_modality_lut applies RescaleSlope/Intercept (or a LUT)."""
    try:
        stored = ds.pixel_array
        hu = apply_modality_lut(stored, ds)
    except Exception as exc:  # codec errors, short pixel data: decoders raise many types
        raise BadRequest("the DICOM pixel data is truncated or corrupt") from exc
    if hu.ndim != 2:
        raise BadRequest("the DICOM pixel data does not match its Rows and Columns")
    return np.asarray(hu, dtype=np.float32)


def window_grey(hu: np.ndarray, window: DicomWindow) -> np.ndarray:
    """HU level - width/2 -> 0 and level + width/2 -> 255, linear between, clipped, rounded (uint8)."""
    grey = hu - np.float32(window.level - window.width / 2.0)
    grey *= np.float32(255.0 / window.width)
    np.clip(grey, 0.0, 255.0, out=grey)
    return np.rint(grey, out=grey).astype(np.uint8)


def _value(ds: Dataset, keyword: str) -> object:
    try:
        return ds.get(keyword)
    except Exception as exc:  # an element whose raw bytes do not parse as its VR
        raise BadRequest(f"the DICOM element {keyword} cannot be read") from exc


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = _value(ds, keyword)
    if value is None or value == "":
        if default is None:
            raise InvalidImage(f"the DICOM file has no {keyword}")
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidImage(f"DICOM {keyword} is not a whole number") from None


def _float(ds: Dataset, keyword: str, default: float) -> float:
    value = _value(ds, keyword)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidImage(f"DICOM {keyword} is not a number") from None


def _text(ds: Dataset, keyword: str) -> str:
    value = _value(ds, keyword)
    return "" if value is None else str(value).strip().upper()
