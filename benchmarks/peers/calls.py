"""The request each peer is sent: the same image bytes, wrapped the way that peer takes them (built
once, before the load starts, so the client's cost per request is the same small write for all)."""

from __future__ import annotations

import base64
import json

from benchmarks.harness.client import Call
from benchmarks.peers import Peer

BOUNDARY = "benchmark-boundary-7d1f"


def multipart(path: str, field: str, image: bytes, content_type: str = "image/png") -> Call:
    """One file part named `field`, as a browser or `curl -F` sends it."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="image.png"\r\n'
        f"Content-Type: {content_type}\r\n\r\n"
    ).encode()
    body = head + image + f"\r\n--{BOUNDARY}--\r\n".encode()
    return Call("POST", path, body, (("Content-Type", f"multipart/form-data; boundary={BOUNDARY}"),))


def peer_call(peer: Peer, image: bytes, model_name: str) -> Call:
    path = peer.path.format(model=model_name)
    if peer.body == "raw":
        return Call("POST", path, image, (("Content-Type", "image/png"),))
    if peer.body.startswith("multipart:"):
        return multipart(path, peer.body.split(":", 1)[1], image)
    if peer.body == "kserve-v1":
        body = json.dumps({"instances": [{"image": {"b64": base64.b64encode(image).decode()}}]}).encode()
        return Call("POST", path, body, (("Content-Type", "application/json"),))
    raise ValueError(f"unknown body kind {peer.body!r}")
