"""DICOM files for tests, made offline: CT slices generated from grey images by inverting the lung window,
pydicom's bundled test files, and header edits of either."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

LUNG = (1500.0, -600.0)  # width, level: the card's default window

# Every tag that can carry a patient's, a study's or an institution's identity, with a marker value per
# tag (DA/TM/UI values must keep their form, so their markers are distinctive numbers).
PHI_MARKERS = {
    "PatientName": "PHIMARK^PATIENTNAME",
    "PatientID": "PHIMARK-PATIENTID",
    "OtherPatientIDs": "PHIMARK-OTHERIDS",
    "PatientBirthDate": "19010203",
    "PatientSex": "O",
    "PatientAge": "099Y",
    "PatientAddress": "PHIMARK-ADDRESS",
    "PatientTelephoneNumbers": "PHIMARK-PHONE",
    "EthnicGroup": "PHIMARK-ETHNIC",
    "PatientComments": "PHIMARK-PATIENTCOMMENTS",
    "StudyDate": "19020304",
    "SeriesDate": "19030405",
    "AcquisitionDate": "19040506",
    "ContentDate": "19050607",
    "StudyTime": "010203.456789",
    "SeriesTime": "020304.567891",
    "AccessionNumber": "PHIMARK-ACCESSNO",
    "StudyID": "PHIMARK-STUDY",
    "StudyDescription": "PHIMARK-STUDYDESCRIPTION",
    "SeriesDescription": "PHIMARK-SERIESDESCRIPTION",
    "InstitutionName": "PHIMARK-INSTITUTION",
    "InstitutionAddress": "PHIMARK-INSTADDRESS",
    "ReferringPhysicianName": "PHIMARK^REFERRING",
    "PerformingPhysicianName": "PHIMARK^PERFORMING",
    "OperatorsName": "PHIMARK^OPERATOR",
    "StationName": "PHIMARK-STATION",
    "DeviceSerialNumber": "PHIMARK-SERIAL",
    "StudyInstanceUID": "1.2.826.0.1.3680043.10.9901.1",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.10.9902.2",
    "SOPInstanceUID": "1.2.826.0.1.3680043.10.9903.3",
    "FrameOfReferenceUID": "1.2.826.0.1.3680043.10.9904.4",
}


def grey_to_hu(grey: np.ndarray, window: tuple[float, float] = LUNG) -> np.ndarray:
    """The inverse of the service's windowing: grey g -> HU level - width/2 + g/255 * width."""
    width, level = window
    return level - width / 2.0 + grey.astype(np.float64) / 255.0 * width


def ct_dataset(
    grey: np.ndarray,
    slope: float = 1.0,
    intercept: float = -1024.0,
    window: tuple[float, float] = LUNG,
    signed: bool = True,
    bits_stored: int = 16,
) -> Dataset:
    """A CT slice whose stored values, rescaled and windowed, give back `grey` exactly."""
    stored = np.rint((grey_to_hu(grey, window) - intercept) / slope)
    dtype = np.int16 if signed else np.uint16
    assert stored.min() >= np.iinfo(dtype).min and stored.max() < 2 ** (bits_stored - int(signed))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = grey.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    ds.PixelData = stored.astype(dtype).tobytes()
    return ds


def to_bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def ct_bytes(grey: np.ndarray, **options) -> bytes:
    return to_bytes(ct_dataset(grey, **options))


def bundled(name: str) -> bytes:
    """A file pydicom ships in its wheel (never one it would download)."""
    path = get_testdata_file(name, download=False)
    assert path is not None, f"{name} is not bundled with pydicom"
    with open(path, "rb") as f:
        return f.read()


def edited(data: bytes, **tags) -> bytes:
    """The file with header elements set (None deletes one); the pixel data is left as it is."""
    ds = pydicom.dcmread(io.BytesIO(data))
    for keyword, value in tags.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def with_raw_value(data: bytes, keyword: str, raw: bytes, placeholder: bytes = b"1.00000000000000") -> bytes:
    """The file with one element's value bytes replaced by `raw` (as long as `placeholder`, a value valid
    for the element's VR): values pydicom would refuse to write."""
    written = edited(data, **{keyword: placeholder.decode()})
    placeholder += b" " * (len(raw) - len(placeholder))  # pydicom pads only to an even length
    assert len(raw) == len(placeholder) and written.count(placeholder) == 1
    return written.replace(placeholder, raw)


def with_phi(data: bytes) -> bytes:
    return edited(data, **PHI_MARKERS)


def phi_needles() -> list[str]:
    """What must never appear in anything the service emits (the date markers also as 1901-02-03)."""
    needles = [v for v in PHI_MARKERS.values() if len(v) > 4]
    needles += [f"{v[:4]}-{v[4:6]}-{v[6:]}" for v in PHI_MARKERS.values() if len(v) == 8 and v.isdigit()]
    needles += ["PHIMARK"]
    return needles


def phantom(size: tuple[int, int] = (96, 112), seed: int = 0) -> np.ndarray:
    """A grey test slice with the full 0..255 range: a gradient, rings and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]]
    base = 255.0 * xx / max(1, size[1] - 1)
    rings = 60.0 * np.sin(np.hypot(yy - size[0] / 2, xx - size[1] / 2) / 4.0)
    grey = np.clip(base + rings + rng.normal(0, 8, size), 0, 255)
    grey[0, 0], grey[-1, -1] = 0, 255
    return np.rint(grey).astype(np.uint8)
