"""Model refresh while serving: /admin reload and promotion (key, no browser origin, no path from the
request), a rejected model leaving the old one serving, SIGHUP, and swaps under load where every answer
is 200 and names the primary of its moment."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from litestar.testing import TestClient

from benchmarks.harness.client import Call, Client, image_call
from service.app import create_app
from service.card import read_card
from service.settings import Settings
from service.web.admin import is_admin_path
from tests.service.svc_kit import assert_error
from tests.service.svc_models import flat_png

ADMIN_KEY = "admin-key-0123456789"
CLIENT_KEY = "client-key-0123456789"
ADMIN = {"X-Admin-Key": ADMIN_KEY}
GREY = flat_png(128)


def sha_of(folder: Path) -> str:
    return read_card(folder).files["int8"].sha256


def point(link: Path, target: Path) -> None:
    """Repoint `link` at `target` atomically, as a host does (ln -sfn to a new name, then rename)."""
    staged = link.with_name(link.name + ".next")
    staged.unlink(missing_ok=True)
    staged.symlink_to(target)
    os.replace(staged, link)


@pytest.fixture
def corrupt_dir(copy_model_dir) -> Path:
    folder = copy_model_dir()
    data = bytearray((folder / "model.int8.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.int8.onnx").write_bytes(bytes(data))
    return folder


@pytest.fixture
def folders(tmp_path: Path, model_dir: Path, gated_dir: Path) -> dict[str, Path]:
    """`current` and `shadow` links (to the plain and the gated model) as the host keeps them."""
    current, shadow = tmp_path / "current", tmp_path / "shadow"
    current.symlink_to(model_dir)
    shadow.symlink_to(gated_dir)
    return {"current": current, "shadow": shadow}


@pytest.fixture
def serve(folders: dict[str, Path]) -> Callable:
    @contextmanager
    def make(**overrides) -> Iterator[TestClient]:
        options = {
            "model_dir": folders["current"],
            "shadow_model_dir": folders["shadow"],
            "admin_api_key": ADMIN_KEY,
            "threads": 1,
            "decode_threads": 1,
        } | overrides
        with TestClient(create_app(Settings(**options)), raise_server_exceptions=False) as client:
            yield client

    return make


def predicted_sha(client: TestClient) -> str:
    response = client.post("/v1/predict", content=GREY)
    assert response.status_code == 200, response.text
    return response.json()["model"]["sha256"]


def test_admin_routes_exist_only_with_an_admin_key(serve) -> None:
    with serve(admin_api_key=None) as c:
        assert_error(c.post("/admin/models/reload", headers=ADMIN), 404, "not_found")
        assert "/admin/models/reload" not in c.get("/schema/openapi.json").text


def test_admin_key_is_required_and_the_client_key_does_not_open_it(serve) -> None:
    with serve(api_key=CLIENT_KEY) as c:
        assert_error(c.post("/admin/models/reload"), 401, "unauthorized")
        assert_error(c.post("/admin/models/reload", headers={"X-Admin-Key": CLIENT_KEY}), 401, "unauthorized")
        assert_error(c.post("/admin/models/reload", headers={"X-API-Key": ADMIN_KEY}), 401, "unauthorized")
        assert_error(c.post("/admin/models/reload", headers={"X-Admin-Key": ADMIN_KEY[:-1]}), 401, "unauthorized")
        assert c.post("/admin/models/reload", headers=ADMIN).status_code == 200
        schema = c.get("/schema/openapi.json").json()
    assert schema["components"]["securitySchemes"]["adminKey"]["name"] == "X-Admin-Key"


@pytest.mark.parametrize("path", ["/admin/models/reload", "/ADMIN/models/reload", "/admin/shadow/reset"])
def test_no_browser_origin_reaches_admin_even_with_cors_open(serve, path: str) -> None:
    with serve(cors_origins=("*",)) as c:
        call = c.post(path, headers={**ADMIN, "Origin": "https://evil.example"})
        preflight = c.options(
            path,
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        public = c.get("/v1/model", headers={"Origin": "https://evil.example"})
    for response in (call, preflight):
        assert response.status_code == 403 and response.json()["error"] == "forbidden"
        assert "access-control-allow-origin" not in response.headers
    assert public.headers["access-control-allow-origin"] == "*"  # CORS itself still works elsewhere


def test_every_spelling_of_the_admin_prefix_counts_as_admin() -> None:
    for path in ("/admin", "/admin/", "//admin/models/reload", "/Admin/x", "///ADMIN"):
        assert is_admin_path(path), path
    for path in ("/administrator", "/v1/admin", "/", "/adminx/models"):
        assert not is_admin_path(path), path


def test_the_admin_routes_take_no_path_url_or_upload(serve, corrupt_dir: Path) -> None:
    with serve() as c:
        before = predicted_sha(c)
        # Nothing in the request can name a folder: extra query fields and bodies are ignored or refused.
        c.post("/admin/models/reload", headers=ADMIN, params={"model_dir": str(corrupt_dir)})
        c.post("/admin/models/reload", headers=ADMIN, content=b"http://evil.example/model.onnx")
        bad_target = c.post("/admin/models/reload", headers=ADMIN, params={"target": str(corrupt_dir)})
        assert predicted_sha(c) == before
    assert bad_target.status_code == 400


def test_reload_swaps_in_what_the_folder_now_holds(serve, folders, gated_dir: Path, model_dir: Path) -> None:
    with serve(shadow_model_dir=None) as c:
        assert predicted_sha(c) == sha_of(model_dir)
        point(folders["current"], gated_dir)
        state = c.post("/admin/models/reload", headers=ADMIN).json()
        assert state["primary"]["sha256"] == sha_of(gated_dir) and state["previous"]["sha256"] == sha_of(model_dir)
        body = c.post("/v1/predict", content=flat_png(255)).json()
        info = c.get("/v1/model").json()
        text = c.get("/metrics").text
    assert body["model"]["sha256"] == sha_of(gated_dir) and body["abstained"] is True  # the new card's gate
    assert info["sha256"] == sha_of(gated_dir) and info["ood"] is not None
    assert "chestnet_ood_threshold" in text and sha_of(model_dir) not in text


def test_a_rejected_model_leaves_the_old_one_serving(serve, folders, corrupt_dir: Path, model_dir: Path) -> None:
    with serve() as c:
        point(folders["current"], corrupt_dir)
        body = assert_error(c.post("/admin/models/reload", headers=ADMIN), 409, "model_rejected")
        assert predicted_sha(c) == sha_of(model_dir)
        assert c.get("/health/ready").status_code == 200
        point(folders["shadow"], corrupt_dir)
        shadow = assert_error(c.post("/admin/models/reload?target=shadow", headers=ADMIN), 409, "model_rejected")
        summary = c.get("/v1/shadow").json()
    assert "sha256" in body["detail"] and "keeps serving" in body["detail"]
    assert "shadow" in shadow["detail"] and summary["active"] is True  # the old candidate stays too


def test_promote_serves_the_candidate_that_was_compared(serve, gated_dir: Path) -> None:
    with serve() as c:
        c.post("/v1/predict", content=GREY)
        state = c.post("/admin/models/promote", headers=ADMIN).json()
        assert state["primary"]["sha256"] == sha_of(gated_dir) and state["shadow"] is None
        assert predicted_sha(c) == sha_of(gated_dir)
        assert c.get("/v1/shadow").json()["active"] is False
        assert_error(c.post("/admin/models/promote", headers=ADMIN), 409, "no_shadow")
        assert_error(c.delete("/admin/models/shadow", headers=ADMIN), 409, "no_shadow")
        # Load a candidate again, then drop it.
        assert c.post("/admin/models/reload?target=shadow", headers=ADMIN).status_code == 200
        dropped = c.delete("/admin/models/shadow", headers=ADMIN).json()
    assert dropped["shadow"] is None and dropped["previous"]["sha256"] == sha_of(gated_dir)


def test_promote_refuses_when_the_shadow_folder_changed(serve, folders, model_dir: Path) -> None:
    with serve() as c:
        point(folders["shadow"], model_dir)  # not the candidate that was compared
        body = assert_error(c.post("/admin/models/promote", headers=ADMIN), 409, "model_rejected")
        assert predicted_sha(c) == sha_of(model_dir)
    assert "reload the shadow first" in body["detail"]


def test_shadow_reload_needs_a_shadow_folder(serve) -> None:
    with serve(shadow_model_dir=None) as c:
        assert_error(c.post("/admin/models/reload?target=shadow", headers=ADMIN), 400, "bad_request")


def test_sighup_reloads_and_a_bad_model_on_sighup_is_logged(start_server, folders, gated_dir, corrupt_dir) -> None:
    server = start_server(folders["current"])
    server.wait_ready()
    point(folders["current"], gated_dir)
    server.proc.send_signal(signal.SIGHUP)
    assert _poll_sha(server.port, sha_of(gated_dir))
    point(folders["current"], corrupt_dir)
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.perf_counter() + 10
    while "model rejected" not in server.output() and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert "model rejected" in server.output() and server.alive_and_ready()
    assert _poll_sha(server.port, sha_of(gated_dir), timeout=0.5)


@pytest.mark.slow
def test_swaps_under_load_answer_200_from_the_primary_of_the_moment(
    start_server, folders, model_dir: Path, gated_dir: Path, multiclass_dir: Path, corrupt_dir: Path
) -> None:
    """c=16 for several seconds, ten swaps (one to a corrupt model): only 200s, and each answer's sha256
    is one of the primaries that served at some point while it was in flight."""
    server = start_server(folders["current"], ADMIN_API_KEY=ADMIN_KEY, SHADOW_MODEL_DIR=str(folders["shadow"]))
    server.wait_ready()
    plan = [gated_dir, multiclass_dir, model_dir, corrupt_dir, gated_dir, model_dir, multiclass_dir, gated_dir]
    plan += [model_dir, gated_dir]
    answers, swaps = asyncio.run(_load_with_swaps(server.port, folders["current"], plan))
    statuses = {status for status, *_ in answers}
    assert statuses == {200}, statuses
    assert len(answers) > 200
    assert [ok for _, _, _, ok in swaps] == [folder != corrupt_dir for folder in plan]
    # sha -> the periods in which it may have been the primary: from the start of the call that swapped it
    # in to the end of the call that swapped it out.
    periods: dict[str, list[tuple[float, float]]] = {}
    current, since = sha_of(model_dir), 0.0
    for started, ended, sha, ok in swaps:
        if ok:
            periods.setdefault(current, []).append((since, ended))
            current, since = sha, started
    periods.setdefault(current, []).append((since, float("inf")))
    seen = set()
    for _, sent, received, sha in answers:
        assert any(lo <= received and sent <= hi for lo, hi in periods.get(sha, [])), (sha, sent, received)
        seen.add(sha)
    assert len(seen) == 3  # every model served some of the load


async def _load_with_swaps(port: int, current: Path, plan: list[Path]):
    answers: list[tuple[int, float, float, str]] = []
    swaps: list[tuple[float, float, str, bool]] = []
    stop = asyncio.Event()

    async def worker() -> None:
        client = Client(port)
        call = image_call(GREY)
        while not stop.is_set():
            sent = time.perf_counter()
            result = await client.call(call)
            received = time.perf_counter()
            sha = json.loads(result.body)["model"]["sha256"] if result.status == 200 else ""
            answers.append((result.status, sent, received, sha))
        client.close()

    async def swapper() -> None:
        client = Client(port)
        reload = Call("POST", "/admin/models/reload", b"", (("X-Admin-Key", ADMIN_KEY),))
        await asyncio.sleep(0.5)
        for folder in plan:
            point(current, folder)
            started = time.perf_counter()
            result = await client.call(reload)
            ended = time.perf_counter()
            ok = result.status == 200
            sha = json.loads(result.body)["primary"]["sha256"] if ok else ""
            swaps.append((started, ended, sha, ok))
            await asyncio.sleep(0.4)
        stop.set()
        client.close()

    await asyncio.gather(swapper(), *(worker() for _ in range(16)))
    return answers, swaps


def _poll_sha(port: int, sha: str, timeout: float = 10.0) -> bool:
    import http.client

    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/v1/model")
            if json.loads(connection.getresponse().read())["sha256"] == sha:
                return True
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.05)
    return False
