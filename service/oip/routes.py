"""Open Inference Protocol v2 (KServe / Triton REST) routes, JSON tensors (service.oip.tensors).

Inputs: exactly one tensor, either FP32 [N, 1, S, S] (already preprocessed as the card says) or
BYTES [N] whose elements are encoded PNG, JPEG or DICOM files (decoded and preprocessed here): base64
strings in JSON, or raw in the binary tensor data extension (service.oip.binary), which outputs use on
request.
Outputs: `logits` FP32 [N, K], `cam` FP32 [N, K, h, w], `probabilities` FP32 [N, labels] and
`label` BYTES [N]; while the OOD gate is on, `ood_score` FP32 [N] and `abstained` BOOL [N] (and `label`
is "" for an abstained image); all of them unless the request names some.
"""

from __future__ import annotations

import asyncio
from importlib import metadata

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from service.errors import BadRequest, NotFound
from service.inference.runtime import Runtime
from service.inference.served import ServedModel
from service.oip import binary
from service.oip.schemas import (
    InferResponse,
    Liveness,
    ModelMetadata,
    ModelReadiness,
    Readiness,
    ServerMetadata,
    TensorMeta,
)
from service.oip.tensors import bytes_files, decode_request, fp32_images, output_tensor, wanted_outputs
from service.web.apidoc import ERROR_RESPONSES, MODEL_NOT_FOUND, InferOperation, not_ready
from service.web.routes import logged_label, request_id, runtime_of

SERVER_NAME = "chest-cancer-net"


@get("/v2", tags=["oip"])
async def server_metadata() -> ServerMetadata:
    """OIP server metadata."""
    return ServerMetadata(name=SERVER_NAME, version=_version(), extensions=[binary.EXTENSION])


@get("/v2/health/live", tags=["oip"])
async def server_live() -> Liveness:
    return Liveness(live=True)


@get("/v2/health/ready", tags=["oip"], responses=not_ready(Readiness))
async def server_ready(state: State) -> Response[Readiness]:
    ok = _is_ready(state)
    return Response(Readiness(ready=ok), status_code=200 if ok else 503)


@get(
    ["/v2/models/{model_name:str}", "/v2/models/{model_name:str}/versions/{model_version:str}"],
    tags=["oip"],
    responses=MODEL_NOT_FOUND,
)
async def model_metadata(
    state: State, model_name: FromPath[str], model_version: FromPath[str | None] = None
) -> ModelMetadata:
    """Name, versions, platform and the input/output tensors."""
    _, model = _model(state, model_name, model_version)
    card, engine = model.card, model.engine
    size, k = card.input.size, card.logits_per_image
    cam_shape = list(engine.session.get_outputs()[_output_index(model, card.outputs.cam)].shape)
    cam_hw = [s if isinstance(s, int) else -1 for s in cam_shape[2:]]
    trust = [TensorMeta("ood_score", "FP32", [-1]), TensorMeta("abstained", "BOOL", [-1])] if model.gate.active else []
    return ModelMetadata(
        name=card.name,
        versions=[card.version],
        platform="onnxruntime_onnx",
        inputs=[
            TensorMeta(engine.input_name, "FP32", [-1, 1, size, size]),
            TensorMeta("image_bytes", "BYTES", [-1]),
        ],
        outputs=[
            TensorMeta("logits", "FP32", [-1, k]),
            TensorMeta("cam", "FP32", [-1, k, *cam_hw]),
            TensorMeta("probabilities", "FP32", [-1, len(card.labels)]),
            TensorMeta("label", "BYTES", [-1]),
            *trust,
        ],
    )


@get(
    ["/v2/models/{model_name:str}/ready", "/v2/models/{model_name:str}/versions/{model_version:str}/ready"],
    tags=["oip"],
    responses={**MODEL_NOT_FOUND, **not_ready(ModelReadiness)},
)
async def model_ready(
    state: State, model_name: FromPath[str], model_version: FromPath[str | None] = None
) -> Response[ModelReadiness]:
    _, model = _model(state, model_name, model_version)
    ok = _is_ready(state)
    return Response(ModelReadiness(name=model.card.name, ready=ok), status_code=200 if ok else 503)


@post(
    ["/v2/models/{model_name:str}/infer", "/v2/models/{model_name:str}/versions/{model_version:str}/infer"],
    status_code=200,
    tags=["oip"],
    operation_class=InferOperation,
    responses={**ERROR_RESPONSES, **MODEL_NOT_FOUND},
)
async def infer(
    request: Request, state: State, model_name: FromPath[str], model_version: FromPath[str | None] = None
) -> Response[InferResponse]:
    """Run the model on one FP32 (preprocessed) or BYTES (encoded images) input tensor, sent as JSON or
    with the binary tensor data extension (`Inference-Header-Content-Length`)."""
    rt, model = _model(state, model_name, model_version)
    async with rt.upload_deadline():
        body = await request.body()
    header, rest = binary.split_body(body, request.headers.get(binary.HEADER_LENGTH))
    data = decode_request(header)
    wanted = wanted_outputs(model, data)
    if len(data.inputs) != 1:
        raise BadRequest("send exactly one input tensor (FP32 preprocessed, or BYTES encoded images)")
    (part,) = binary.take_parts(rest, [t.parameters.binary_data_size for t in data.inputs])
    tensor = data.inputs[0]
    if part is not None and len(tensor.data):
        raise BadRequest(f"input {tensor.name!r} has both data and a binary_data_size parameter")
    async with rt.deadline():
        if tensor.datatype == "FP32":
            images = fp32_images(rt, model, tensor, part)
            with rt.batcher.admit(len(images)) as ticket:
                results = await asyncio.gather(*(rt.classify_tensor(ticket, image, model) for image in images))
        elif tensor.datatype == "BYTES":
            files = bytes_files(rt, tensor, part)
            with rt.batcher.admit(len(files)) as ticket:
                results = await asyncio.gather(*(rt.classify(ticket, file, model) for file in files))
        else:
            raise BadRequest("the input datatype must be FP32 or BYTES")
    request.scope["state"]["label"] = ",".join(logged_label(r) for r in results)
    tensors = [output_tensor(model, name, results, as_binary) for name, as_binary in wanted]
    answer = InferResponse(
        model_name=model.card.name,
        model_version=model.card.version,
        outputs=[t for t, _ in tensors],
        id=data.id if data.id is not None else request_id(request),
    )
    if not any(as_binary for _, as_binary in wanted):
        return Response(answer)
    head = msgspec.json.encode(answer)
    body = head + b"".join(raw for _, raw in tensors)
    return Response(body, media_type=binary.MEDIA_TYPE, headers={binary.HEADER_LENGTH: str(len(head))})


def _model(state: State, name: str, version: str | None) -> tuple[Runtime, ServedModel]:
    """The runtime and the primary model, taken once for the whole request."""
    rt = runtime_of(state)
    model = rt.primary
    if name != model.card.name or (version is not None and version != model.card.version):
        raise NotFound(f"no model {name!r}" + (f" version {version!r}" if version else ""))
    return rt, model


def _is_ready(state: State) -> bool:
    rt = state.get("runtime")
    return rt is not None and rt.ready and not rt.draining


def _output_index(model: ServedModel, name: str) -> int:
    return [o.name for o in model.engine.session.get_outputs()].index(name)


def _version() -> str:
    try:
        return metadata.version("chest-cancer-net")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0"


OIP_ROUTES = [server_metadata, server_live, server_ready, model_metadata, model_ready]
OIP_PREDICTION_ROUTES = [infer]
