"""REST routes: /v1 predictions and explanations, the model card, health and metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromQuery

from service.errors import BadRequest, NotReady, ServiceError
from service.inference.batching import Ticket
from service.inference.heatmap import heat_for, overlay_png
from service.inference.runtime import Classified, Runtime
from service.inference.served import ServedModel
from service.observability.metrics import CONTENT_TYPE
from service.web.apidoc import (
    ERROR_RESPONSES,
    ExplainOperation,
    ManyImagesOperation,
    SingleImageOperation,
    not_ready,
)
from service.web.schemas import (
    BatchItem,
    BatchPrediction,
    Box,
    Explanation,
    Health,
    ItemError,
    ItemResult,
    ModelInfo,
    OodResult,
    Prediction,
    ShadowSummary,
    model_info,
)
from service.web.uploads import multipart_images, single_image

_ITEM_ERRORS = (400, 413, 415, 422)  # problems with one image, not with the request or the service


def runtime_of(state: State) -> Runtime:
    runtime = state.get("runtime")
    if runtime is None:
        raise NotReady("the model is not loaded yet")
    return runtime


def request_id(request: Request) -> str:
    return request.scope["state"].get("request_id", "")


def answer(result: Classified) -> dict[str, Any]:
    """What every prediction carries: the label (none when abstained), why not, the probabilities and
    the OOD gate's reading."""
    verdict, decision = result.verdict, result.decision
    return {
        "label": result.label,
        "abstained": verdict is not None and verdict.abstained,
        "reason": verdict.reason if verdict is not None else None,
        "probability": decision.probability,
        "probabilities": decision.probabilities,
        "ood": None if verdict is None else OodResult(verdict.score, verdict.threshold, verdict.in_distribution),
    }


def logged_label(result: Classified) -> str:
    return result.label if result.label is not None else "abstained"


@post("/v1/predict", status_code=200, tags=["predict"], operation_class=SingleImageOperation, responses=ERROR_RESPONSES)
async def predict(request: Request, state: State) -> Prediction:
    """Classify one chest CT image: label, P(not normal), every class's probability."""
    rt = runtime_of(state)
    model = rt.primary
    started = time.perf_counter()
    async with rt.upload_deadline():
        data = await single_image(request)
    async with rt.deadline():
        with rt.batcher.admit() as ticket:
            result = await rt.classify(ticket, data, model)
    request.scope["state"]["label"] = logged_label(result)
    return Prediction(
        **answer(result),
        threshold=model.card.threshold,
        model=model.ref,
        timings=rt.timings([result], started),
        request_id=request_id(request),
    )


@post(
    "/v1/predict/batch",
    status_code=200,
    tags=["predict"],
    operation_class=ManyImagesOperation,
    responses=ERROR_RESPONSES,
)
async def predict_batch(request: Request, state: State) -> BatchPrediction:
    """Classify several images; a bad image gets an error in its own slot, the others still run."""
    rt = runtime_of(state)
    model = rt.primary
    started = time.perf_counter()
    async with rt.upload_deadline():
        images = await multipart_images(request, max_images=rt.settings.max_batch_files)
    if not images:
        raise BadRequest("no images: send them as multipart fields named 'files'")
    async with rt.deadline():
        with rt.batcher.admit(len(images)) as ticket:
            outcomes = await asyncio.gather(*(_item(rt, ticket, data, model) for data in images))
    results = [_batch_item(i, outcome) for i, outcome in enumerate(outcomes)]
    request.scope["state"]["label"] = ",".join(
        logged_label(o) if isinstance(o, Classified) else "error" for o in outcomes
    )
    done = [o for o in outcomes if isinstance(o, Classified)]
    return BatchPrediction(
        results=results,
        threshold=model.card.threshold,
        model=model.ref,
        timings=rt.timings(done, started),
        request_id=request_id(request),
    )


async def _item(rt: Runtime, ticket: Ticket, data: bytes, model: ServedModel) -> Classified | ServiceError:
    try:
        return await rt.classify(ticket, data, model)
    except ServiceError as exc:
        if exc.status not in _ITEM_ERRORS:
            raise
        rt.metrics.errors.labels(exc.code).inc()
        return exc


def _batch_item(index: int, outcome: Classified | ServiceError) -> BatchItem:
    if isinstance(outcome, ServiceError):
        return BatchItem(index=index, error=ItemError(error=outcome.code, detail=outcome.detail))
    return BatchItem(index=index, result=ItemResult(**answer(outcome)))


@post("/v1/explain", status_code=200, tags=["predict"], operation_class=ExplainOperation, responses=ERROR_RESPONSES)
async def explain(request: Request, state: State, target: FromQuery[str | None] = None) -> Response[Explanation]:
    """Class-activation heatmap for the decided label (or `target`): a PNG overlay on the input,
    or the numbers with `Accept: application/json`."""
    rt = runtime_of(state)
    model = rt.primary
    card = model.card
    started = time.perf_counter()
    if target is not None and target not in card.labels:
        raise BadRequest(f"target must be one of: {', '.join(card.labels)}")
    async with rt.upload_deadline():
        data = await single_image(request)
    async with rt.deadline():
        with rt.batcher.admit() as ticket:
            result = await rt.classify(ticket, data, model)
        decision, prepared = result.decision, result.prepared
        assert prepared is not None
        shown = target or decision.label
        channel, sign = model.rule.channel_for(shown)
        heat = heat_for(result.outcome.cam, channel, sign, prepared.grey.size, card.input.size)
        request.scope["state"]["label"] = logged_label(result)
        fields = answer(result)
        if request.accept.best_match(["image/png", "application/json"], "image/png") == "image/png":
            png = await rt.offload(overlay_png, prepared.grey, heat)
            return Response(png, media_type="image/png", headers=explain_headers(fields))
    left, top, width, height = heat.box
    return Response(
        Explanation(
            **fields,
            threshold=card.threshold,
            target=shown,
            channel=channel,
            sign=sign,
            cam=heat.grid.tolist(),
            cam_shape=list(result.outcome.cam.shape),
            input_size=card.input.size,
            image_region=Box(left, top, width, height),
            image_width=prepared.grey.size[0],
            image_height=prepared.grey.size[1],
            model=model.ref,
            timings=rt.timings([result], started),
            request_id=request_id(request),
        )
    )


def explain_headers(fields: dict[str, Any]) -> dict[str, str]:
    """The answer beside a heatmap PNG: X-Label is empty when abstained (X-Abstained says so)."""
    headers = {
        "X-Label": fields["label"] or "",
        "X-Abstained": "true" if fields["abstained"] else "false",
        "X-Probability": f"{fields['probability']:.6f}",
    }
    if fields["ood"] is not None:
        headers["X-OOD-Score"] = f"{fields['ood'].score:.6g}"
    return headers


@get("/v1/model", tags=["model"])
async def model(state: State) -> ModelInfo:
    """The primary model card's public fields, which variant this process serves, and the shadow
    candidate (if any)."""
    rt = runtime_of(state)
    primary, shadow = rt.primary, rt.shadow
    return model_info(primary.card, primary.ref, shadow.candidate.ref if shadow is not None else None)


@get("/v1/shadow", tags=["model"])
async def shadow_summary(state: State) -> ShadowSummary:
    """How the shadow candidate's answers compared with the primary's since it was loaded or reset:
    counts, the agreement rate with its 95% Wilson interval, the label table (primary -> candidate)
    and the probability differences. `active` is false when there is no candidate."""
    shadow = runtime_of(state).shadow
    if shadow is None:
        return ShadowSummary(active=False)
    return msgspec.convert(
        {"active": True, "candidate": shadow.candidate.ref, "sample": shadow.sample, **shadow.tally.summary()},
        ShadowSummary,
        from_attributes=True,
    )


@get("/health/live", tags=["health"])
async def live() -> Health:
    """The process is up (it may still be loading or draining)."""
    return Health("live")


@get("/health/ready", tags=["health"], responses=not_ready(Health))
async def ready(state: State) -> Response[Health]:
    """200 once the model passed its self-test; 503 before that and while draining."""
    rt = state.get("runtime")
    if rt is not None and rt.ready and not rt.draining:
        return Response(Health("ready"))
    status = "draining" if rt is not None and rt.draining else "starting"
    return Response(Health(status), status_code=503, headers={"Retry-After": "1"})


@get("/metrics", media_type=CONTENT_TYPE, tags=["health"])
async def metrics(state: State) -> bytes:
    """Prometheus metrics."""
    return state.metrics.render()


PREDICTION_ROUTES = [predict, predict_batch, explain]
INFO_ROUTES = [model, shadow_summary, live, ready, metrics]
