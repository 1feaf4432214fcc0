"""`python -m service [--host H] [--port P]`: settings from the environment, the model verified and
self-tested before the socket opens, then uvicorn with limits that bound slow or greedy clients
(header deadline, keep-alive, request deadline, requests in progress: see service.web.connections).

SIGTERM: /health/ready turns 503 at once; after DRAIN_GRACE_S the listener closes, in-flight requests
get DRAIN_TIMEOUT_S to finish, the batcher drains, and the process exits 0.
SIGHUP: load MODEL_DIR again and swap it in without a restart (service.inference.reload); a model that
fails its checks is logged and the serving one stays.
Exit codes: 0 after a clean stop, 1 for a missing/corrupt/mismatched model (primary or SHADOW_MODEL_DIR's
candidate), 2 for a bad setting.
"""

from __future__ import annotations

import os

# Before numpy loads: its OpenBLAS would start a thread per core that spins after every matrix product
# (the OOD gate's), taking the cores ONNX Runtime infers on. Measured at c=16: 11.7-13.3 ms of CPU per
# request with the default, 8.0-9.2 ms with one thread, 7.7-8.5 ms with the gate off. A value already
# set in the environment wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import logging
import signal
import sys
import threading
import time
from types import FrameType

import uvicorn

from service.app import begin_drain, create_app, load_shadow
from service.card import CardError
from service.inference.served import ServedModel
from service.observability.logs import configure_logging
from service.settings import Settings, SettingsError
from service.web.connections import header_deadline_protocol

log = logging.getLogger("service")


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM marks the app not ready before (optionally) a grace period."""

    def __init__(self, config: uvicorn.Config, grace_s: float) -> None:
        super().__init__(config)
        self.grace_s = grace_s
        self._draining = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        begin_drain(self.config.app)
        if sig == signal.SIGTERM and self.grace_s > 0 and not self._draining:
            self._draining = True
            log.info("draining", extra={"fields": {"grace_s": self.grace_s}})
            timer = threading.Timer(self.grace_s, super().handle_exit, (sig, frame))
            timer.daemon = True
            timer.start()
            return
        self._draining = True
        super().handle_exit(sig, frame)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"service: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        primary = ServedModel.load(settings.model_dir, settings)
        shadow = load_shadow(settings) if settings.shadow_model_dir is not None else None
    except CardError as exc:
        print(f"service: {exc}", file=sys.stderr)
        return 1
    log.info(
        "model verified",
        extra={"fields": {"seconds": round(time.perf_counter() - started, 3), "settings": settings.describe()}},
    )
    config = uvicorn.Config(
        create_app(settings, primary, shadow),
        host=args.host,
        port=args.port,
        http=header_deadline_protocol(settings.header_timeout_s),
        loop="asyncio",
        lifespan="on",
        log_config=None,
        access_log=False,  # service.web.observe writes one JSON line per request instead
        server_header=False,
        # Only from the proxies named in FORWARDED_ALLOW_IPS (off by default): the client address and
        # scheme they pass on replace the peer's.
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=list(settings.forwarded_allow_ips) or None,
        timeout_keep_alive=settings.keepalive_s,
        # No limit_concurrency: it counts idle and half-open sockets (service.web.connections counts requests).
        timeout_graceful_shutdown=settings.drain_timeout_s,
        backlog=256,
    )
    server = DrainingServer(config, settings.drain_grace_s)
    # uvicorn re-raises the stop signal after a graceful stop; a no-op handler lets us exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
