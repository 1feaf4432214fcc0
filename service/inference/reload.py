"""Model refresh while serving: reload the primary, (re)load or drop the shadow, promote the shadow.

Every load reads only the folders the settings name (MODEL_DIR, SHADOW_MODEL_DIR): no request chooses a
path, a URL or uploads a model. A model is verified (sha256 of every file its card lists) and
self-tested (the card's golden output) in a worker thread while the current one keeps serving; only a
model that passed replaces it, in one assignment on the event loop (Runtime.swap). Requests already
running finish on the model they took. A model that fails leaves everything as it was and the answer
says why (409 model_rejected). One change at a time: the others wait for the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from pathlib import Path

import anyio.to_thread
import msgspec

from service.card import CardError
from service.errors import BadRequest, ModelRejected, NoShadow, ServiceError
from service.inference.engine import release_free_heap
from service.inference.runtime import Runtime
from service.inference.served import ServedModel
from service.inference.shadow import Shadow
from service.web.schemas import ModelRef

log = logging.getLogger("service")

# Freed sessions go back to the OS once the requests that held the old model have finished.
_TRIM_AFTER_S = (2.0, 15.0)


class ModelsState(msgspec.Struct, frozen=True):
    primary: ModelRef
    shadow: ModelRef | None
    previous: ModelRef | None  # what the change replaced (None when it replaced nothing)


class Reloader:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self._lock = asyncio.Lock()

    async def reload_primary(self, cause: str) -> ModelsState:
        """Load MODEL_DIR again and serve it."""
        async with self._lock:
            model = await self._load(self.settings.model_dir, "primary", cause)
            previous = self.runtime.swap(model)
            return self._changed("primary reloaded", cause, previous.ref)

    async def reload_shadow(self, cause: str) -> ModelsState:
        """Load SHADOW_MODEL_DIR (again) as the shadow candidate; its comparisons start from zero."""
        folder = self.settings.shadow_model_dir
        if folder is None:
            raise BadRequest("no shadow folder is configured (SHADOW_MODEL_DIR)")
        async with self._lock:
            candidate = await self._load(folder, "shadow", cause)
            previous = await self.runtime.set_shadow(self.shadow_for(candidate))
            return self._changed("shadow loaded", cause, previous.candidate.ref if previous else None)

    async def promote(self, cause: str) -> ModelsState:
        """Serve the shadow candidate as the primary and stop shadowing.

        The candidate is loaded again from its folder with the primary's threads and drift window (a
        shadow runs on one thread, unwatched), and must be the very model that was compared: the same
        sha256, else the folder changed under it and nothing is promoted.
        """
        async with self._lock:
            shadow = self.runtime.shadow
            if shadow is None or self.settings.shadow_model_dir is None:
                raise NoShadow("there is no shadow candidate to promote")
            model = await self._load(self.settings.shadow_model_dir, "promoted", cause)
            if model.ref.sha256 != shadow.candidate.ref.sha256:
                compared, found = shadow.candidate.ref.sha256[:12], model.ref.sha256[:12]
                raise ModelRejected(
                    f"the shadow folder no longer holds the candidate that was compared (sha256 {compared}..., "
                    f"now {found}...): reload the shadow first"
                )
            previous = self.runtime.swap(model)
            await self.runtime.set_shadow(None)
            return self._changed("shadow promoted", cause, previous.ref)

    async def drop_shadow(self, cause: str) -> ModelsState:
        async with self._lock:
            previous = await self.runtime.set_shadow(None)
            if previous is None:
                raise NoShadow("there is no shadow candidate")
            return self._changed("shadow dropped", cause, previous.candidate.ref)

    async def on_signal(self) -> None:
        """SIGHUP: reload the primary; a failure is logged (there is nobody to answer)."""
        with contextlib.suppress(ServiceError):  # _load logged why
            await self.reload_primary("SIGHUP")

    def shadow_for(self, candidate: ServedModel) -> Shadow:
        return Shadow(candidate, self.settings, self.runtime.limits, self.runtime.metrics)

    def state(self, previous: ModelRef | None = None) -> ModelsState:
        shadow = self.runtime.shadow
        return ModelsState(self.runtime.primary.ref, shadow.candidate.ref if shadow else None, previous)

    async def _load(self, folder: Path, role: str, cause: str) -> ServedModel:
        load = functools.partial(ServedModel.load, folder, self.settings, shadow=role == "shadow")
        try:
            return await anyio.to_thread.run_sync(load)
        except CardError as exc:
            log.warning("model rejected", extra={"fields": {"role": role, "cause": cause, "why": str(exc)}})
            raise ModelRejected(f"the {role} model was not loaded, the current one keeps serving: {exc}") from None
        except Exception as exc:  # an unexpected failure must not take the serving model down either
            log.error("model load failed", exc_info=exc, extra={"fields": {"role": role, "cause": cause}})
            raise ModelRejected(
                f"the {role} model could not be loaded ({type(exc).__name__}); the current one keeps serving"
            ) from None

    def _changed(self, what: str, cause: str, previous: ModelRef | None) -> ModelsState:
        state = self.state(previous)
        log.info(
            what,
            extra={
                "fields": {
                    "cause": cause,
                    "primary": state.primary.sha256,
                    "shadow": state.shadow.sha256 if state.shadow else None,
                    "previous": previous.sha256 if previous else None,
                }
            },
        )
        loop = asyncio.get_running_loop()
        for delay in _TRIM_AFTER_S:
            loop.call_later(delay, lambda: loop.run_in_executor(None, release_free_heap))
        return state
