"""The REST endpoints through Litestar's TestClient (lifespan included): results, limits, errors."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient
from PIL import Image

from service.app import create_app
from service.card import ModelCard, ModelFile
from service.settings import Settings
from service.web.schemas import public_view
from tests.service.svc_kit import assert_error, blob_png, jpeg_bytes, png_bytes
from tests.service.svc_models import write_model_dir


@pytest.fixture
def make_client(model_dir: Path) -> Iterator[Callable]:
    @contextmanager
    def make(folder: Path | None = None, **overrides) -> Iterator[TestClient]:
        settings = Settings(model_dir=folder or model_dir, threads=1, decode_threads=2, **overrides)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client

    yield make


@pytest.fixture
def client(make_client) -> Iterator[TestClient]:
    with make_client() as c:
        yield c


def _png(image: Image.Image, **save) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **save)
    return out.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming a size, with no pixel data at all."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)  # a few bytes: nowhere near the pixels the header claims
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# --- predict -------------------------------------------------------------------------------------


def test_predict_raw_body_bright_image_is_cancer(client: TestClient) -> None:
    r = client.post("/v1/predict", content=png_bytes(230), headers={"Content-Type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == "adenocarcinoma"
    assert body["probability"] > 0.9
    assert body["probabilities"]["adenocarcinoma"] == pytest.approx(body["probability"])
    assert body["probabilities"]["normal"] == pytest.approx(1 - body["probability"])
    assert body["threshold"] == 0.5
    assert body["model"]["name"] == "chest-cancer-net" and body["model"]["variant"] == "int8"
    assert len(body["model"]["sha256"]) == 64
    assert set(body["timings"]) == {"decode_ms", "queue_ms", "inference_ms", "total_ms"}
    assert body["request_id"] == r.headers["x-request-id"]


def test_predict_multipart_dark_image_is_normal(client: TestClient) -> None:
    r = client.post("/v1/predict", files={"file": ("../../etc/passwd", png_bytes(10), "text/plain")})
    assert r.status_code == 200, r.text
    assert r.json()["label"] == "normal"
    assert r.json()["probability"] < 0.5


def test_format_is_sniffed_not_taken_from_the_client(client: TestClient) -> None:
    """A JPEG sent as image/png with a .png name is decoded as JPEG; a PNG named .gif works too."""
    r = client.post("/v1/predict", content=jpeg_bytes(230), headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and r.json()["label"] == "adenocarcinoma"
    r = client.post("/v1/predict", files={"file": ("x.gif", png_bytes(230), "image/gif")})
    assert r.status_code == 200


def test_threshold_edge_uses_greater_or_equal(make_client, tmp_path: Path) -> None:

    folder = write_model_dir(tmp_path / "m", "binary", threshold=0.01)
    with make_client(folder) as c:
        assert c.post("/v1/predict", content=png_bytes(0)).json()["label"] == "adenocarcinoma"


def test_multiclass_probabilities_and_labels(make_client, multiclass_dir: Path) -> None:
    with make_client(multiclass_dir) as c:
        bright = c.post("/v1/predict", content=png_bytes(240)).json()
        dark = c.post("/v1/predict", content=png_bytes(5)).json()
    assert set(bright["probabilities"]) == {
        "adenocarcinoma",
        "large.cell.carcinoma",
        "normal",
        "squamous.cell.carcinoma",
    }
    assert sum(bright["probabilities"].values()) == pytest.approx(1.0)
    assert bright["probability"] == pytest.approx(1 - bright["probabilities"]["normal"])
    assert bright["label"] == "adenocarcinoma"
    assert dark["label"] == "normal"


def test_fp32_variant(make_client) -> None:
    with make_client(model_variant="fp32") as c:
        body = c.post("/v1/predict", content=png_bytes(200)).json()
        assert body["model"]["variant"] == "fp32"
        assert c.get("/v1/model").json()["variant"] == "fp32"


@pytest.mark.parametrize(
    "mode",
    ["L", "LA", "RGB", "RGBA", "P", "I;16", "1"],
)
def test_pixel_modes_are_handled(client: TestClient, mode: str) -> None:
    base = Image.new("L", (80, 64), 200)
    image = base.convert(mode) if mode != "I;16" else Image.fromarray(np.full((64, 80), 200 * 257, np.uint16))
    r = client.post("/v1/predict", content=_png(image))
    assert r.status_code == 200, (mode, r.text)


def test_cmyk_jpeg_is_handled(client: TestClient) -> None:
    out = io.BytesIO()
    Image.new("CMYK", (80, 64), (0, 0, 0, 40)).save(out, format="JPEG")
    assert client.post("/v1/predict", content=out.getvalue()).status_code == 200


def test_exif_orientation_is_applied(client: TestClient) -> None:
    """A landscape image whose EXIF says 'rotate 90' is explained as portrait."""
    image = Image.new("L", (120, 60), 128)
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", exif=exif.tobytes())
    r = client.post("/v1/explain", content=out.getvalue(), headers={"Accept": "application/json"})
    assert r.status_code == 200
    assert (r.json()["image_width"], r.json()["image_height"]) == (60, 120)


# --- input refusals ------------------------------------------------------------------------------


def test_unsupported_format_is_415(client: TestClient) -> None:
    gif = io.BytesIO()
    Image.new("L", (64, 64)).save(gif, format="GIF")
    assert_error(
        client.post("/v1/predict", content=gif.getvalue(), headers={"Content-Type": "image/png"}),
        415,
        "unsupported_media_type",
    )
    assert_error(client.post("/v1/predict", content=b"%PDF-1.4 hello"), 415, "unsupported_media_type")


def test_empty_body_is_422(client: TestClient) -> None:
    assert_error(client.post("/v1/predict", content=b""), 422, "invalid_image")


def test_body_over_the_limit_is_413(make_client) -> None:
    with make_client(max_body_bytes=4096) as c:
        big = _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128), np.uint8)))
        assert len(big) > 4096
        assert_error(c.post("/v1/predict", content=big), 413, "payload_too_large")
        assert_error(c.post("/v1/predict", files={"file": ("a", big, "image/png")}), 413, "payload_too_large")


def test_pixel_count_is_checked_from_the_header(make_client) -> None:
    with make_client(max_pixels=64 * 64) as c:
        body = assert_error(c.post("/v1/predict", content=png_bytes(100, (65, 64))), 422, "invalid_image")
        assert "pixels" in body["detail"]
        # Header only, no pixel data: refused on the header, before any decoding.
        body = assert_error(c.post("/v1/predict", content=_png_header_only(100_000, 100_000)), 422, "invalid_image")
        assert "pixels" in body["detail"]


def test_absurd_and_zero_dimensions_are_refused(client: TestClient) -> None:
    assert_error(client.post("/v1/predict", content=_png_header_only(0, 64)), 422, "invalid_image")
    assert_error(client.post("/v1/predict", content=png_bytes(100, (4000, 40))), 422, "invalid_image")
    assert_error(client.post("/v1/predict", content=png_bytes(100, (8, 8))), 422, "invalid_image")


def test_truncated_file_is_refused(client: TestClient) -> None:
    data = _png(Image.fromarray(np.random.default_rng(1).integers(0, 255, (96, 96), np.uint8)))
    assert_error(client.post("/v1/predict", content=data[: len(data) // 2]), 422, "invalid_image")
    jpeg = jpeg_bytes(100, (200, 200))
    assert_error(client.post("/v1/predict", content=jpeg[:200]), 422, "invalid_image")


def test_multi_frame_image_is_refused(client: TestClient) -> None:
    frames = [Image.new("L", (64, 64), v) for v in (0, 255)]
    out = io.BytesIO()
    frames[0].save(out, format="PNG", save_all=True, append_images=frames[1:])
    body = assert_error(client.post("/v1/predict", content=out.getvalue()), 422, "invalid_image")
    assert "frame" in body["detail"]


def test_multipart_without_file_field_is_400(client: TestClient) -> None:
    assert_error(client.post("/v1/predict", files={"other": ("a", png_bytes(), "image/png")}), 400, "bad_request")


def test_malformed_multipart_is_400(client: TestClient) -> None:
    r = client.post(
        "/v1/predict", content=b"--xyz\r\nnonsense", headers={"Content-Type": "multipart/form-data; boundary=xyz"}
    )
    assert_error(r, 400, "bad_request")


def test_uploads_never_touch_disk(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    def refuse(*args, **kwargs):
        raise AssertionError("an upload was spooled to disk")

    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", refuse)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    big = _png(Image.fromarray(np.random.default_rng(2).integers(0, 255, (1200, 1200), np.uint8)))
    assert len(big) > 1024 * 1024  # over Litestar's spool threshold
    r = client.post("/v1/predict", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 200, r.text


# --- batch ---------------------------------------------------------------------------------------


def test_batch_results_in_order_with_one_bad_item(client: TestClient) -> None:
    files = [
        ("files", ("a.png", png_bytes(240), "image/png")),
        ("files", ("b.png", b"not an image", "image/png")),
        ("files", ("c.png", png_bytes(5), "image/png")),
        ("files", ("d.jpg", jpeg_bytes(240)[:100], "image/jpeg")),
    ]
    r = client.post("/v1/predict/batch", files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [item["index"] for item in results] == [0, 1, 2, 3]
    assert results[0]["result"]["label"] == "adenocarcinoma" and results[0]["error"] is None
    assert results[1]["error"]["error"] == "unsupported_media_type" and results[1]["result"] is None
    assert results[2]["result"]["label"] == "normal"
    assert results[3]["error"]["error"] == "invalid_image"


def test_batch_count_is_bounded(make_client) -> None:
    with make_client(max_batch_files=3) as c:
        files = [("files", (f"{i}.png", png_bytes(100), "image/png")) for i in range(4)]
        assert_error(c.post("/v1/predict/batch", files=files), 413, "payload_too_large")
        assert c.post("/v1/predict/batch", files=files[:3]).status_code == 200


def test_batch_needs_multipart_and_images(client: TestClient) -> None:
    assert_error(client.post("/v1/predict/batch", content=png_bytes()), 415, "unsupported_media_type")
    assert_error(client.post("/v1/predict/batch", files={"x": ("a", b"1", "text/plain")}), 400, "bad_request")


# --- explain -------------------------------------------------------------------------------------


def test_explain_png_overlay(client: TestClient) -> None:
    r = client.post("/v1/explain", files={"file": ("x.png", blob_png(), "image/png")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(r.content))
    assert overlay.size == (128, 96) and overlay.mode == "RGB"
    assert r.headers["x-label"] in ("normal", "adenocarcinoma")


def test_explain_json_locates_the_bright_region(client: TestClient) -> None:
    r = client.post(
        "/v1/explain?target=adenocarcinoma",
        content=blob_png((128, 96), (96, 24)),
        headers={"Accept": "application/json"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["target"] == "adenocarcinoma" and body["sign"] == 1.0
    assert body["cam_shape"] == [1, 8, 8]
    cam = np.asarray(body["cam"])
    assert cam.shape == (8, 8)
    # 128x96 letterboxed into 64x64: 64x48, 8 rows of padding at the top.
    assert body["image_region"] == {"left": 0, "top": 8, "width": 64, "height": 48}
    row, col = np.unravel_index(np.argmax(cam), cam.shape)
    assert col >= 4 and row <= 3  # the blob is right of centre, near the top


def test_explain_normal_decision_shows_negated_channel(client: TestClient) -> None:
    body = client.post("/v1/explain", content=png_bytes(5), headers={"Accept": "application/json"}).json()
    assert body["label"] == "normal" and body["target"] == "normal" and body["sign"] == -1.0


def test_explain_unknown_target_is_400(client: TestClient) -> None:
    assert_error(client.post("/v1/explain?target=banana", content=png_bytes()), 400, "bad_request")


def test_explain_multiclass_channel(make_client, multiclass_dir: Path) -> None:
    with make_client(multiclass_dir) as c:
        body = c.post("/v1/explain", content=png_bytes(240), headers={"Accept": "application/json"}).json()
    assert body["label"] == "adenocarcinoma" and body["channel"] == 0 and body["cam_shape"] == [4, 8, 8]


# --- model, health, docs, headers ----------------------------------------------------------------


def test_model_card_public_fields(client: TestClient) -> None:
    body = client.get("/v1/model").json()
    assert body["name"] == "chest-cancer-net" and body["labels"] == ["normal", "adenocarcinoma"]
    assert body["input"]["size"] == 64 and body["threshold"] == 0.5
    assert set(body["files"]["int8"]) == {"sha256", "bytes"}  # no file paths
    assert body["sha256"] == body["files"]["int8"]["sha256"]
    # Every card field is shown (the view is derived from the card's definition), paths excepted.
    card_fields = {f.name for f in msgspec.structs.fields(ModelCard)}
    assert set(body) == card_fields | {"variant", "sha256", "shadow"}
    assert body["shadow"] is None  # no candidate configured
    assert set(body["files"]["int8"]) == {f.name for f in msgspec.structs.fields(ModelFile)} - {"path"}


def test_a_new_card_field_reaches_the_public_view() -> None:
    class Extended(ModelCard, frozen=True, forbid_unknown_fields=True):
        new_fact: str = "x"

    assert "new_fact" in {f.name for f in msgspec.structs.fields(public_view(Extended))}


def test_health(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "live"}
    assert client.get("/health/ready").json() == {"status": "ready"}


def test_not_ready_before_startup(model_dir: Path) -> None:
    """Without the lifespan (model not loaded) readiness is 503 and predictions are refused."""
    app = create_app(Settings(model_dir=model_dir))
    client = TestClient(app, raise_server_exceptions=False)  # not entered: no lifespan
    r = client.get("/health/ready")
    assert r.status_code == 503 and r.json() == {"status": "starting"}
    assert_error(client.post("/v1/predict", content=png_bytes()), 503, "not_ready")


def test_openapi_and_docs(client: TestClient) -> None:
    spec = client.get("/schema/openapi.json").json()
    for path in ("/v1/predict", "/v1/predict/batch", "/v1/explain", "/v1/model", "/v2/models/{model_name}/infer"):
        assert path in spec["paths"]
    predict = spec["paths"]["/v1/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {
        "multipart/form-data",
        "image/png",
        "image/jpeg",
        "application/dicom",
    }
    assert predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Prediction")
    assert "ErrorBody" in spec["components"]["schemas"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    assert "/static/docs.js" in docs.text and "http" not in docs.text.replace("http-equiv", "")
    assert client.get("/static/docs.js").status_code == 200


def test_web_page_is_self_contained(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "research use only" in page.text.lower()
    for asset in ("app.js", "app.css"):
        text = client.get(f"/static/{asset}").text
        assert "http://" not in text and "https://" not in text
    assert_error(client.get("/static/nope.js"), 404, "not_found")


def test_security_headers_and_request_id(client: TestClient) -> None:
    r = client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer"
    odd = client.get("/health/live", headers={"X-Request-ID": "bad id\twith spaces"})
    assert odd.headers["x-request-id"] != "bad id\twith spaces" and len(odd.headers["x-request-id"]) == 32
    assert_error(client.get("/nowhere"), 404, "not_found")


def test_method_not_allowed(client: TestClient) -> None:
    r = client.get("/v1/predict")
    assert_error(r, 405, "method_not_allowed")


def test_cors_closed_by_default(client: TestClient) -> None:
    r = client.options(
        "/v1/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in r.headers
    r = client.post("/v1/predict", content=png_bytes(), headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


def test_cors_when_configured(make_client) -> None:
    with make_client(cors_origins=("https://ui.example",)) as c:
        r = c.options("/v1/predict", headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"})
        assert r.headers["access-control-allow-origin"] == "https://ui.example"
        r = c.options(
            "/v1/predict", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert r.headers.get("access-control-allow-origin") != "https://evil.example"


def test_api_key(make_client) -> None:
    key = "k" * 24
    with make_client(api_key=key) as c:
        assert_error(c.post("/v1/predict", content=png_bytes()), 401, "unauthorized")
        assert_error(
            c.post("/v1/predict", content=png_bytes(), headers={"X-API-Key": "k" * 23 + "x"}), 401, "unauthorized"
        )
        assert c.post("/v1/predict", content=png_bytes(), headers={"X-API-Key": key}).status_code == 200
        assert c.post("/v1/explain", content=png_bytes(), headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert c.post("/v2/models/chest-cancer-net/infer", json={"inputs": []}).status_code == 401
        # Health, metrics, model and the page stay open.
        for path in ("/health/ready", "/metrics", "/v1/model", "/", "/v2/health/ready"):
            assert c.get(path).status_code == 200, path


def test_unexpected_errors_leak_nothing(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.inference import runtime

    def boom(*args, **kwargs):
        raise RuntimeError("secret /work/main/service/inference/runtime.py internals")

    monkeypatch.setattr(runtime, "preprocess", boom)
    r = client.post("/v1/predict", content=png_bytes())
    body = assert_error(r, 500, "internal_error")
    assert "secret" not in r.text and "runtime" not in r.text
    assert body["detail"] == "an internal error occurred"
