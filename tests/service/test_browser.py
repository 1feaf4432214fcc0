"""The web page and /docs in headless Chromium: upload, result, heatmap, an error; no outside requests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.settings import Settings
from tests.service.svc_kit import png_bytes, serve_in_thread
from tests.service.svc_models import flat_png, write_model_dir

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (apt-get install chromium)"),
]
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:

    folder = write_model_dir(tmp_path_factory.mktemp("browser-models"), "binary")
    with serve_in_thread(Settings(model_dir=folder, threads=1)) as url:
        yield url


@pytest.fixture
def page(base_url: str, tmp_path: Path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page()
        page.outside = []  # type: ignore[attr-defined]
        page.console_errors = []  # type: ignore[attr-defined]
        page.on(
            "request", lambda r: None if r.url.startswith((base_url, "data:", "blob:")) else page.outside.append(r.url)
        )
        page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
        yield page
        browser.close()


def _console_problems(page) -> list[str]:
    # A refused upload logs "Failed to load resource ... 415"; that one is expected.
    return [m for m in page.console_errors if "Failed to load resource" not in m]


def test_upload_result_heatmap_and_error(page, base_url: str, tmp_path: Path) -> None:
    bright, odd = tmp_path / "bright.png", tmp_path / "notes.png"
    bright.write_bytes(png_bytes(235, (160, 120)))
    odd.write_bytes(b"this is not an image at all")
    page.goto(base_url + "/")
    assert "Research use only, not a diagnosis" in page.inner_text("#notice")
    page.wait_for_function("document.querySelector('#model-info').textContent.includes('chest-cancer-net')")
    assert "0.0.0-test" in page.inner_text("#model-info")

    page.set_input_files("#file", str(bright))
    page.wait_for_selector("#result:not([hidden])")
    assert page.inner_text("#label") == "adenocarcinoma"
    assert page.inner_text("#probability").endswith("%")
    assert page.is_visible("#preview") and page.eval_on_selector("#preview", "img => img.naturalWidth") == 160

    page.check("#heatmap-toggle")
    page.wait_for_selector("#overlay:not([hidden])")
    page.wait_for_function("document.querySelector('#overlay').naturalWidth === 160")
    assert not page.is_visible("#preview")
    page.screenshot(path=str(tmp_path / "heatmap.png"))
    if os.environ.get("SCREENSHOT_DIR"):
        page.screenshot(path=os.path.join(os.environ["SCREENSHOT_DIR"], "web-page-heatmap.png"), full_page=True)
    page.uncheck("#heatmap-toggle")
    assert page.is_visible("#preview") and not page.is_visible("#overlay")

    page.set_input_files("#file", str(odd))
    page.wait_for_selector("#error:not([hidden])")
    assert "only PNG, JPEG and DICOM (Part 10) images are accepted" in page.inner_text("#error")
    assert page.is_hidden("#result")
    assert page.outside == [] and _console_problems(page) == []


def test_drop_an_image(page, base_url: str) -> None:
    page.goto(base_url + "/")
    data = list(png_bytes(10, (120, 90)))
    transfer = page.evaluate_handle(
        """bytes => { const t = new DataTransfer();
           t.items.add(new File([new Uint8Array(bytes)], 'dark.png', {type: 'image/png'})); return t; }""",
        data,
    )
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#result:not([hidden])")
    assert page.inner_text("#label") == "normal"
    assert page.outside == [] and _console_problems(page) == []


def test_docs_page_works_offline(page, base_url: str) -> None:
    page.goto(base_url + "/docs")
    page.wait_for_selector("details.op")
    assert page.locator("details.op").count() >= 10
    op = page.locator("details.op", has_text="/v1/model").first
    op.locator("> summary").click()
    op.locator("button", has_text="Send").click()
    op.locator(".out pre").wait_for()
    assert "chest-cancer-net" in op.locator(".out pre").inner_text()
    assert page.outside == [] and _console_problems(page) == []


@pytest.fixture(scope="module")
def gated_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = write_model_dir(tmp_path_factory.mktemp("browser-gated"), "binary", gated=True)
    with serve_in_thread(Settings(model_dir=folder, threads=1)) as url:
        yield url


def test_an_abstention_is_a_message_never_a_label(page, gated_url: str, tmp_path: Path) -> None:
    white, grey = tmp_path / "white.png", tmp_path / "grey.png"
    white.write_bytes(flat_png(255))
    grey.write_bytes(flat_png(128))
    page.goto(gated_url + "/")
    page.set_input_files("#file", str(white))
    page.wait_for_selector("#abstained:not([hidden])")
    assert "No prediction" in page.inner_text("#abstained")
    assert "does not look like the chest CT slices" in page.inner_text("#abstained")
    assert "above the model's threshold" in page.inner_text("#abstained-reason")
    assert not page.is_visible("#label") and not page.is_visible("#probabilities")
    assert "adenocarcinoma" not in page.inner_text("#result") and "normal" not in page.inner_text("#result")
    page.check("#heatmap-toggle")
    page.wait_for_selector("#heatmap-status:has-text('no prediction is given')")

    page.set_input_files("#file", str(grey))  # an in-distribution image afterwards shows its label again
    page.wait_for_selector("#label:text-is('adenocarcinoma')")
    assert page.is_hidden("#abstained") and page.is_visible("#label")
    # The page fixture watches the other server's origin; this page talks to its own only.
    assert [u for u in page.outside if not u.startswith(gated_url)] == [] and _console_problems(page) == []


def test_a_dicom_slice_is_classified_and_its_heatmap_shown(page, base_url: str, tmp_path: Path) -> None:
    import numpy as np

    from tests.service.dicom_kit import ct_bytes

    slice_file = tmp_path / "slice.dcm"
    slice_file.write_bytes(ct_bytes(np.full((120, 160), 235, np.uint8)))
    page.goto(base_url + "/")
    page.set_input_files("#file", str(slice_file))
    page.wait_for_selector("#result:not([hidden])")
    assert page.inner_text("#label") == "adenocarcinoma"  # as the same grey level as a PNG
    assert page.is_visible("#no-preview") and not page.is_visible("#preview")
    page.check("#heatmap-toggle")
    page.wait_for_selector("#overlay:not([hidden])")
    page.wait_for_selector("#overlay", state="visible")
    assert page.eval_on_selector("#overlay", "img => img.decode().then(() => img.naturalWidth)") == 160
    assert not page.is_visible("#no-preview")
    assert page.outside == [] and _console_problems(page) == []
