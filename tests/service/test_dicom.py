"""DICOM CT slices: decoding to the same grey image a PNG gives, refusals from the header, bomb guards,
every route, and no patient data in anything the service emits."""

from __future__ import annotations

import base64
import io
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from litestar.testing import TestClient
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from benchmarks.harness.process import ServerProcess
from service.app import create_app
from service.card import CARD_FILE, DicomWindow
from service.errors import ServiceError
from service.inputs.dicom_frames import rle_decoded_length
from service.inputs.imaging import decode, sniff_format
from service.inputs.limits import DecodeLimits
from service.settings import Settings
from tests.service.dicom_kit import (
    bundled,
    ct_bytes,
    ct_dataset,
    edited,
    phantom,
    phi_needles,
    to_bytes,
    with_phi,
    with_raw_value,
)
from tests.service.svc_kit import assert_error

MODEL = "chest-cancer-net"
ANY_MODALITY = DecodeLimits(dicom_modalities=frozenset({"CT", "MR", "NM", "OT"}), min_side=1, max_aspect=100.0)
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "chest-ct-kaggle" / "Data"


UPLOAD = DecodeLimits()
LUNG_WINDOW = DicomWindow()


def grey_of(data: bytes, limits: DecodeLimits = UPLOAD, window: DicomWindow = LUNG_WINDOW) -> np.ndarray:
    return np.asarray(decode(data, limits, window))


def png_of(grey: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(grey, mode="L").save(out, format="PNG")
    return out.getvalue()


def refusal(data: bytes, limits: DecodeLimits = UPLOAD) -> ServiceError:
    with pytest.raises(ServiceError) as info:
        decode(data, limits)
    return info.value


@pytest.fixture
def make_client(model_dir: Path) -> Iterator[Callable]:
    clients: list[TestClient] = []

    def make(folder: Path | None = None, **overrides) -> TestClient:
        settings = Settings(model_dir=folder or model_dir, threads=1, decode_threads=2, **overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


# --- decoding --------------------------------------------------------------------------------------


def test_sniffed_from_the_bytes_only() -> None:
    data = ct_bytes(phantom())
    assert sniff_format(data) == "DICOM"
    assert refusal(b"DICM" + data[132:]).status == 415  # the magic must sit after the 128-byte preamble
    assert refusal(data[:131]).status == 415


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"slope": 0.5},
        {"slope": 2.0, "intercept": -1000.0},
        {"signed": False, "bits_stored": 12, "intercept": -2048.0},
    ],
    ids=["slope1", "slope0.5", "slope2", "unsigned12bit"],
)
def test_a_slice_made_by_inverting_the_window_decodes_to_its_grey_image(options: dict) -> None:
    grey = phantom()
    assert np.array_equal(grey_of(ct_bytes(grey, **options)), grey)


def test_bundled_ct_matches_an_independent_hounsfield_computation() -> None:
    data = bundled("CT_small.dcm")
    ds = pydicom.dcmread(io.BytesIO(data))
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.rint(np.clip((hu - (-600 - 750)) / 1500 * 255, 0, 255)).astype(np.uint8)
    assert np.array_equal(grey_of(data), expected)
    assert expected.std() > 5  # the oracle is not trivially flat


def test_monochrome1_is_inverted() -> None:
    grey = phantom()
    data = edited(ct_bytes(grey), PhotometricInterpretation="MONOCHROME1")
    assert np.array_equal(grey_of(data), 255 - grey)


def test_the_window_decides_the_grey_image() -> None:
    grey = phantom()
    data = ct_bytes(grey)
    mediastinal = grey_of(data, window=DicomWindow(width=400.0, level=40.0))
    assert not np.array_equal(mediastinal, grey)
    assert np.array_equal(grey_of(ct_bytes(grey, window=(400.0, 40.0)), window=DicomWindow(400.0, 40.0)), grey)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000"])
def test_compressed_slices_decode_to_the_same_grey(syntax) -> None:
    grey = phantom()
    ds = ct_dataset(grey)
    ds.compress(syntax, encoding_plugin="pylibjpeg" if syntax == JPEG2000Lossless else "")
    assert np.array_equal(grey_of(to_bytes(ds)), grey)


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_implicit.dcm"]
)
def test_bundled_lossless_variants_match_the_uncompressed_file(name: str) -> None:
    reference = grey_of(bundled("MR_small.dcm"), ANY_MODALITY, DicomWindow(width=2000.0, level=1000.0))
    got = grey_of(bundled(name), ANY_MODALITY, DicomWindow(width=2000.0, level=1000.0))
    assert reference.std() > 5 and np.array_equal(got, reference)


@pytest.mark.parametrize(
    ("name", "size"),
    [("693_J2KI.dcm", (512, 512)), ("JPGExtended.dcm", (256, 1024)), ("image_dfl.dcm", (512, 512))],
)
def test_bundled_jpeg2000_jpeg_extended_and_deflated_files_decode(name: str, size: tuple[int, int]) -> None:
    image = decode(bundled(name), ANY_MODALITY)
    assert image.mode == "L" and image.size == size
    assert np.asarray(image).std() > 1


def test_jpeg_baseline_decodes_close_to_the_native_pixels() -> None:
    # Pillow writes the baseline JPEG codestream (no DICOM JPEG encoder is installed); 8-bit stored values
    # with a rescale that spans the lung window.
    stored = phantom()
    jpeg = io.BytesIO()
    Image.fromarray(stored, mode="L").save(jpeg, format="JPEG", quality=95)
    ds = ct_dataset(stored)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.RescaleSlope, ds.RescaleIntercept = f"{1500 / 255:.6f}", "-1350"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([jpeg.getvalue()])
    ds["PixelData"].VR = "OB"
    got = grey_of(to_bytes(ds)).astype(int)
    assert np.abs(got - stored.astype(int)).max() <= 12 and np.abs(got - stored.astype(int)).mean() < 2


# --- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"Modality": "MR"}, "Modality MR is not accepted"),
        ({"Modality": None}, "names no Modality"),
        ({"NumberOfFrames": "2"}, "2 frames"),
        ({"SamplesPerPixel": 3}, "3 samples per pixel"),
        ({"PhotometricInterpretation": "PALETTE COLOR"}, "photometric interpretation PALETTE COLOR"),
        ({"BitsStored": 17}, "BitsStored 17 does not fit BitsAllocated 16"),
        ({"HighBit": 11}, "HighBit 11 does not match BitsStored 16"),
        ({"BitsAllocated": 12}, "BitsAllocated 12 is not supported"),
        ({"PixelRepresentation": 2}, "PixelRepresentation"),
        ({"Rows": None}, "no Rows"),
        ({"PixelData": None}, "no pixel data"),
        ({"RescaleSlope": "0"}, "RescaleSlope is not a usable number"),
        ({"Rows": 4096, "Columns": 4096}, "4096x4096 pixels, more than"),
        ({"Rows": 20, "Columns": 20}, "each side must be >= 32"),
    ],
)
def test_header_refusals_are_422_before_any_pixel_is_decoded(tags: dict, message: str) -> None:
    error = refusal(edited(ct_bytes(phantom()), **tags))
    assert (error.status, error.code) == (422, "invalid_image") and message in error.detail


def test_an_unparsable_rescale_is_422() -> None:
    error = refusal(with_raw_value(ct_bytes(phantom()), "RescaleIntercept", b"not-a-number-abc"))
    assert error.status == 422 and "RescaleIntercept is not a number" in error.detail


def test_modalities_follow_the_limits() -> None:
    data = edited(ct_bytes(phantom()), Modality="MR")
    assert decode(data, DecodeLimits(dicom_modalities=frozenset({"CT", "MR"}))).size == (112, 96)


def with_syntax(data: bytes, uid: str) -> bytes:
    """The file relabelled with another transfer syntax, its pixel bytes encapsulated as one fragment."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = uid
    ds.PixelData = encapsulate([ds.PixelData])
    ds["PixelData"].VR = "OB"
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("uid", "named"),
    [
        ("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level"),
        ("1.2.826.0.1.3680043.10.1.2.3", "1.2.826.0.1.3680043.10.1.2.3 (not a standard transfer syntax)"),
    ],
)
def test_a_transfer_syntax_without_a_decoder_is_415_naming_it(uid: str, named: str) -> None:
    error = refusal(with_syntax(ct_bytes(phantom()), uid))
    assert error.status == 415 and named in error.detail


def test_a_codestream_larger_than_the_header_is_refused_before_decoding() -> None:
    ds = ct_dataset(phantom((512, 512)))
    ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    ds.Rows = ds.Columns = 64  # the header claims far fewer pixels than the codestream holds
    error = refusal(to_bytes(ds))
    assert error.status == 422 and "frame is 512x512, its header says 64x64" in error.detail


def test_rle_that_decodes_past_its_header_is_refused() -> None:
    ds = ct_dataset(phantom())
    ds.compress(RLELossless)
    ds.Rows, ds.Columns = 48, 56
    error = refusal(to_bytes(ds))
    assert error.status == 422 and "RLE data decodes to more pixels" in error.detail
    assert rle_decoded_length(bytes([0x81, 7]) * 4, 10_000) == 4 * 128  # one header + byte -> 128 copies


def test_a_deflate_bomb_is_refused_before_inflating_it() -> None:
    ds = ct_dataset(phantom())
    ds.add_new(0x00091010, "OB", bytes(64 << 20))  # 64 MiB of zeros in a private element
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    data = to_bytes(ds)
    assert len(data) < 1 << 20
    error = refusal(data)
    assert error.status == 422 and "inflates to more than" in error.detail


def test_truncated_and_corrupted_files_are_4xx_never_an_exception() -> None:
    rng = np.random.default_rng(0)
    j2k = ct_dataset(phantom())
    j2k.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
    rle = ct_dataset(phantom())
    rle.compress(RLELossless)
    for data in (ct_bytes(phantom()), to_bytes(j2k), to_bytes(rle), bundled("CT_small.dcm")):
        cuts = sorted({*range(132, 400, 7), *rng.integers(132, len(data) - 1, 25).tolist()})
        for cut in cuts:
            assert refusal(data[:cut]).status in (400, 422), cut
        for _ in range(30):
            mangled = bytearray(data)
            for at in rng.integers(132, len(data), 4):
                mangled[at] = int(rng.integers(0, 256))
            try:
                decode(bytes(mangled))
            except ServiceError as exc:
                assert exc.status in (400, 415, 422)


# --- the routes ------------------------------------------------------------------------------------


def probability(response: httpx.Response) -> float:
    assert response.status_code == 200, response.text
    return response.json()["probability"]


def test_every_route_gives_a_dicom_the_probability_of_its_png(client: TestClient) -> None:
    grey = phantom((160, 200), seed=3)
    png, dcm, half = png_of(grey), ct_bytes(grey), ct_bytes(grey, slope=0.5)
    expected = probability(client.post("/v1/predict", files={"file": ("a.png", png)}))
    raw = client.post("/v1/predict", content=dcm, headers={"content-type": "application/dicom"})
    assert abs(probability(raw) - expected) <= 1e-3
    assert abs(probability(client.post("/v1/predict", files={"file": ("s.dcm", half)})) - expected) <= 1e-3

    batch = client.post(
        "/v1/predict/batch", files=[("files", png), ("files", dcm), ("files", edited(dcm, Modality="MR"))]
    )
    assert batch.status_code == 200, batch.text
    first, second, third = batch.json()["results"]
    assert abs(second["result"]["probability"] - first["result"]["probability"]) <= 1e-3
    assert third["error"]["error"] == "invalid_image" and "Modality MR" in third["error"]["detail"]

    explained = client.post("/v1/explain", files={"file": dcm}, headers={"accept": "application/json"})
    assert explained.status_code == 200 and abs(explained.json()["probability"] - expected) <= 1e-3
    assert (explained.json()["image_width"], explained.json()["image_height"]) == (200, 160)
    overlay = client.post("/v1/explain", content=dcm, headers={"content-type": "application/dicom"})
    assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/png"
    assert abs(float(overlay.headers["x-probability"]) - expected) <= 1e-3
    assert Image.open(io.BytesIO(overlay.content)).size == (200, 160)

    oip = client.post(f"/v2/models/{MODEL}/infer", json=oip_bytes_request([png, dcm]))
    assert oip.status_code == 200, oip.text
    outputs = {o["name"]: o["data"] for o in oip.json()["outputs"]}
    labels = outputs["label"]
    assert labels[0] == labels[1] and labels[0] in ("normal", "adenocarcinoma")


def oip_bytes_request(files: list[bytes]) -> dict:
    encoded = [base64.b64encode(f).decode() for f in files]
    return {"inputs": [{"name": "image_bytes", "shape": [len(files)], "datatype": "BYTES", "data": encoded}]}


def test_route_refusals_carry_the_status_of_the_problem(client: TestClient) -> None:
    dcm = ct_bytes(phantom())
    headers = {"content-type": "application/dicom"}
    assert_error(client.post("/v1/predict", content=edited(dcm, Modality="MR"), headers=headers), 422, "invalid_image")
    assert_error(client.post("/v1/predict", content=dcm[: len(dcm) // 2], headers=headers), 400, "bad_request")
    mpeg = with_syntax(dcm, "1.2.840.10008.1.2.4.100")
    body = assert_error(client.post("/v1/explain", content=mpeg, headers=headers), 415, "unsupported_media_type")
    assert "MPEG2" in body["detail"]
    oip = client.post(f"/v2/models/{MODEL}/infer", json=oip_bytes_request([edited(dcm, NumberOfFrames="3")]))
    assert oip.status_code == 422 and "3 frames" in oip.text


def test_dicom_allow_modalities_widens_what_is_decoded(make_client) -> None:
    mr = edited(ct_bytes(phantom()), Modality="MR")
    client = make_client(dicom_allow_modalities=("CT", "MR"))
    assert client.post("/v1/predict", content=mr, headers={"content-type": "application/dicom"}).status_code == 200


def test_the_service_windows_with_the_card_s_window(make_client, copy_model_dir) -> None:
    folder = copy_model_dir()
    card = json.loads((folder / CARD_FILE).read_text())
    card["input"]["dicom_window"] = {"width": 400.0, "level": 40.0}
    (folder / CARD_FILE).write_text(json.dumps(card))
    grey = phantom((160, 200), seed=3)
    dcm = ct_bytes(grey)
    mediastinal = grey_of(dcm, window=DicomWindow(width=400.0, level=40.0))
    client = make_client(folder)
    got = probability(client.post("/v1/predict", content=dcm, headers={"content-type": "application/dicom"}))
    assert abs(got - probability(client.post("/v1/predict", content=png_of(mediastinal)))) <= 1e-6
    assert abs(got - probability(client.post("/v1/predict", content=png_of(grey)))) > 1e-3
    assert client.get("/v1/model").status_code == 200


def test_docs_and_page_name_dicom(client: TestClient) -> None:
    schema = client.get("/schema/openapi.json").json()
    for path in ("/v1/predict", "/v1/explain"):
        assert "application/dicom" in schema["paths"][path]["post"]["requestBody"]["content"]
    assert "DICOM" in schema["paths"]["/v1/predict/batch"]["post"]["requestBody"]["description"]
    page = client.get("/").text
    assert 'accept="image/png,image/jpeg,application/dicom,.dcm"' in page
    assert "application/dicom,.dcm" in client.get("/static/docs.js").text


# --- no patient data leaves ------------------------------------------------------------------------


def test_no_phi_in_responses_logs_or_metrics(start_server: Callable[..., ServerProcess], model_dir: Path) -> None:
    server = start_server(model_dir, LOG_LEVEL="DEBUG")
    server.wait_ready()
    good = with_phi(ct_bytes(phantom()))
    refused = edited(good, Modality="MR")
    malformed = good[: len(good) - 3000]
    bad_header = with_raw_value(good, "RescaleSlope", b"PHIMARK-SLOPE-16")
    # pydicom warns and logs about an unknown character set quoting the value: that must not reach the log
    bad_charset = with_raw_value(good, "SpecificCharacterSet", b"PHIMARK-CHARSET1", placeholder=b"ISO 2022 IR 100")
    # every element's value is also in the file's bytes, so a marker that leaks can be found
    assert all(n.encode() in good for n in phi_needles() if n[4] != "-")
    raw = {"content-type": "application/dicom"}
    emitted: list[httpx.Response] = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for data in (good, refused, malformed, bad_header, bad_charset):
            emitted.append(http.post("/v1/predict", content=data, headers=raw))
            emitted.append(http.post("/v1/predict", files={"file": ("PHIMARK-name.dcm", data, "application/dicom")}))
            emitted.append(http.post("/v1/explain", content=data, headers={**raw, "accept": "application/json"}))
            emitted.append(http.post("/v1/explain", content=data, headers=raw))
            emitted.append(http.post(f"/v2/models/{MODEL}/infer", json=oip_bytes_request([data])))
        emitted.append(
            http.post("/v1/predict/batch", files=[("files", d) for d in (good, refused, malformed, bad_header)])
        )
        emitted.append(http.get("/metrics"))
    statuses = [r.status_code for r in emitted]
    assert statuses.count(200) >= 6 and {400, 422} <= set(statuses) and max(statuses) < 500, statuses
    texts = [server.output()]
    for response in emitted:
        texts.append(response.content.decode("latin-1"))
        texts.append(" ".join(f"{k}: {v}" for k, v in response.headers.items()))
    everything = "\n".join(texts)
    assert '"request"' in texts[0]  # the access log was captured
    leaked = [needle for needle in phi_needles() if needle in everything]
    assert leaked == [], leaked


# --- real images -----------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.skipif(not DATA.is_dir(), reason=f"real data not present at {DATA}")
def test_real_slices_as_dicom_give_their_png_probability(client: TestClient) -> None:
    pngs = []
    for folder in sorted(p for p in (DATA / "test").iterdir() if p.is_dir()):
        pngs += sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")[:2]
    assert len(pngs) >= 4
    for path in pngs:
        png = path.read_bytes()
        grey = np.asarray(decode(png))  # the grey image the PNG path gives, inverted into HU
        expected = probability(client.post("/v1/predict", content=png))
        for options in ({}, {"slope": 0.5}):
            dcm = ct_bytes(grey, **options)
            got = probability(client.post("/v1/predict", content=dcm, headers={"content-type": "application/dicom"}))
            assert abs(got - expected) <= 1e-3, (path.name, options)


def test_zlib_is_what_pydicom_inflates_with() -> None:
    # The deflate guard inflates raw DEFLATE (no zlib header) as pydicom does; a wrong wbits would make
    # every deflated file "corrupt" rather than bounded.
    data = bundled("image_dfl.dcm")
    stream = io.BytesIO(data)
    pydicom.filereader.read_preamble(stream, False)
    pydicom.filereader._read_file_meta_info(stream)
    assert zlib.decompressobj(-zlib.MAX_WBITS).decompress(data[stream.tell() :], 1 << 24)
