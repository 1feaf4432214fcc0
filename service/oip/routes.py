"""Open Inference Protocol v2 (KServe / Triton REST), JSON tensors.

Inputs: exactly one tensor, either FP32 [N, 1, S, S] (already preprocessed as the card says) or
BYTES [N] whose elements are base64-encoded PNG/JPEG files (decoded and preprocessed here).
Outputs: `logits` FP32 [N, K], `cam` FP32 [N, K, h, w], `probabilities` FP32 [N, labels] and
`label` BYTES [N]; all of them unless the request names some.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import warnings
from importlib import metadata
from typing import Annotated, Any

import msgspec
import numpy as np
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from service.errors import BadRequest, NotFound, PayloadTooLarge
from service.inference.runtime import Classified, Runtime
from service.web.apidoc import ERROR_RESPONSES, MODEL_NOT_FOUND, InferOperation, not_ready
from service.web.routes import request_id, runtime_of

OUTPUTS = ("logits", "cam", "probabilities", "label")
SERVER_NAME = "chest-cancer-net"


class TensorMeta(msgspec.Struct, frozen=True):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(msgspec.Struct, frozen=True):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(msgspec.Struct, frozen=True):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]


class Liveness(msgspec.Struct, frozen=True):
    live: bool


class Readiness(msgspec.Struct, frozen=True):
    ready: bool


class ModelReadiness(msgspec.Struct, frozen=True):
    name: str
    ready: bool


class InferTensor(msgspec.Struct, frozen=True, omit_defaults=True):
    """An output tensor."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any]
    parameters: dict[str, Any] | None = None


# Request fields that could hold millions of values stay raw JSON (validated, never turned into Python
# objects) until the declared shape is checked: as Python floats, an 8 MiB body of numbers took
# ~70 MB, and 64 such requests at once took the process past 4 GB.
_Few = msgspec.Meta(max_length=8)


class InferInput(msgspec.Struct, frozen=True):
    """An input tensor: `data` flat (row-major) or nested; BYTES elements are base64 strings."""

    name: str
    shape: Annotated[list[int], _Few]
    datatype: str
    data: msgspec.Raw
    parameters: msgspec.Raw = msgspec.Raw()  # accepted, ignored


class RequestedOutput(msgspec.Struct, frozen=True):
    name: str
    parameters: msgspec.Raw = msgspec.Raw()  # accepted, ignored


class InferRequest(msgspec.Struct, frozen=True):
    inputs: Annotated[list[InferInput], _Few]
    id: str | None = None
    parameters: msgspec.Raw = msgspec.Raw()  # accepted, ignored
    outputs: Annotated[list[RequestedOutput], _Few] | None = None


class InferResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    model_name: str
    model_version: str
    outputs: list[InferTensor]
    id: str | None = None


@get("/v2", tags=["oip"])
async def server_metadata() -> ServerMetadata:
    """OIP server metadata."""
    return ServerMetadata(name=SERVER_NAME, version=_version(), extensions=[])


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
    rt = _model(state, model_name, model_version)
    size, k = rt.card.input.size, rt.engine.outputs_per_image
    cam_shape = list(rt.engine.session.get_outputs()[_output_index(rt, rt.card.outputs.cam)].shape)
    cam_hw = [s if isinstance(s, int) else -1 for s in cam_shape[2:]]
    return ModelMetadata(
        name=rt.card.name,
        versions=[rt.card.version],
        platform="onnxruntime_onnx",
        inputs=[
            TensorMeta(rt.engine.input_name, "FP32", [-1, 1, size, size]),
            TensorMeta("image_bytes", "BYTES", [-1]),
        ],
        outputs=[
            TensorMeta("logits", "FP32", [-1, k]),
            TensorMeta("cam", "FP32", [-1, k, *cam_hw]),
            TensorMeta("probabilities", "FP32", [-1, len(rt.card.labels)]),
            TensorMeta("label", "BYTES", [-1]),
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
    rt = _model(state, model_name, model_version)
    ok = _is_ready(state)
    return Response(ModelReadiness(name=rt.card.name, ready=ok), status_code=200 if ok else 503)


@post(
    ["/v2/models/{model_name:str}/infer", "/v2/models/{model_name:str}/versions/{model_version:str}/infer"],
    status_code=200,
    tags=["oip"],
    operation_class=InferOperation,
    responses={**ERROR_RESPONSES, **MODEL_NOT_FOUND},
)
async def infer(
    request: Request, state: State, model_name: FromPath[str], model_version: FromPath[str | None] = None
) -> InferResponse:
    """Run the model on one FP32 (preprocessed) or BYTES (encoded images) input tensor."""
    rt = _model(state, model_name, model_version)
    async with rt.upload_deadline():
        body = await request.body()
    data = _decode(body)
    wanted = _wanted_outputs(data)
    if len(data.inputs) != 1:
        raise BadRequest("send exactly one input tensor (FP32 preprocessed, or BYTES encoded images)")
    tensor = data.inputs[0]
    async with rt.deadline():
        if tensor.datatype == "FP32":
            images = _fp32_images(rt, tensor)
            with rt.batcher.admit(len(images)) as ticket:
                results = await asyncio.gather(*(rt.classify_tensor(ticket, image) for image in images))
        elif tensor.datatype == "BYTES":
            files = _bytes_files(rt, tensor)
            with rt.batcher.admit(len(files)) as ticket:
                results = await asyncio.gather(*(rt.classify(ticket, file) for file in files))
        else:
            raise BadRequest("the input datatype must be FP32 or BYTES")
    request.scope["state"]["label"] = ",".join(r.decision.label for r in results)
    return InferResponse(
        model_name=rt.card.name,
        model_version=rt.card.version,
        outputs=[_output(rt, name, results) for name in wanted],
        id=data.id if data.id is not None else request_id(request),
    )


def _decode(body: bytes) -> InferRequest:
    # By hand, not Litestar's JSONBody: that decodes to Python objects first, which is the cost avoided.
    try:
        return msgspec.json.decode(body, type=InferRequest)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(str(exc)) from None


def _fp32_images(rt: Runtime, tensor: InferInput) -> list[np.ndarray]:
    size = rt.card.input.size
    shape = tensor.shape
    if len(shape) != 4 or shape[1:] != [1, size, size] or shape[0] < 1:
        raise BadRequest(f"an FP32 input must have shape [N, 1, {size}, {size}]")
    _check_count(rt, shape[0])
    array = _numbers(tensor.data, int(np.prod(shape)), shape)
    if not np.isfinite(array).all():
        raise BadRequest("the FP32 data contains NaN or infinity")
    batch = array.reshape(shape)
    return [batch[i] for i in range(shape[0])]


def _numbers(raw: msgspec.Raw, count: int, shape: list[int]) -> np.ndarray:
    """A JSON array of `count` numbers (flat or nested) as float32, parsed by numpy in place of one
    Python object per number; the count is checked on the text first."""
    blob = bytes(raw)
    if not re.match(rb"\s*\[", blob):
        raise BadRequest("the FP32 data must be an array of numbers")
    text = blob.translate(None, b"[] \t\r\n")
    del blob
    found = text.count(b",") + 1 if text else 0
    if found != count:
        raise BadRequest(f"the FP32 data has {found} elements; shape {shape} needs {count}")
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):  # out of range: inf, refused later
            warnings.simplefilter("error")
            return np.fromstring(text, dtype=np.float32, sep=",")
    except (ValueError, DeprecationWarning):
        raise BadRequest("the FP32 data must be numbers") from None


def _bytes_files(rt: Runtime, tensor: InferInput) -> list[bytes]:
    shape = tensor.shape
    if len(shape) != 1 or shape[0] < 1:
        raise BadRequest("a BYTES input must have shape [N] and N base64-encoded image files")
    _check_count(rt, shape[0])
    try:
        items = msgspec.json.decode(tensor.data, type=Annotated[list[Any], msgspec.Meta(max_length=shape[0])])
    except msgspec.ValidationError:
        items = None
    if items is None or len(items) != shape[0]:
        raise BadRequest("a BYTES input must have shape [N] and N base64-encoded image files")
    files = []
    for item in items:
        if not isinstance(item, str):
            raise BadRequest("each BYTES element must be a base64 string")
        try:
            files.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest("a BYTES element is not valid base64") from None
    return files


def _check_count(rt: Runtime, count: int) -> None:
    if count > rt.settings.max_batch_files:
        raise PayloadTooLarge(f"at most {rt.settings.max_batch_files} images per request")


def _wanted_outputs(data: InferRequest) -> list[str]:
    if not data.outputs:
        return list(OUTPUTS)
    names = [o.name for o in data.outputs]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise BadRequest(f"unknown output {unknown[0]!r}; outputs are {', '.join(OUTPUTS)}")
    return names


def _output(rt: Runtime, name: str, results: list[Classified]) -> InferTensor:
    n = len(results)
    if name == "label":
        return InferTensor(name, [n], "BYTES", [r.decision.label for r in results])
    if name == "probabilities":
        rows = [[r.decision.probabilities[label] for label in rt.card.labels] for r in results]
        array = np.asarray(rows, dtype=np.float32)
    else:
        array = np.stack([r.outcome.logits if name == "logits" else r.outcome.cam for r in results])
    return InferTensor(name, list(array.shape), "FP32", array.astype(np.float32).reshape(-1).tolist())


def _model(state: State, name: str, version: str | None) -> Runtime:
    rt = runtime_of(state)
    if name != rt.card.name or (version is not None and version != rt.card.version):
        raise NotFound(f"no model {name!r}" + (f" version {version!r}" if version else ""))
    return rt


def _is_ready(state: State) -> bool:
    rt = state.get("runtime")
    return rt is not None and rt.ready and not rt.draining


def _output_index(rt: Runtime, name: str) -> int:
    return [o.name for o in rt.engine.session.get_outputs()].index(name)


def _version() -> str:
    try:
        return metadata.version("chest-cancer-net")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "0"


OIP_ROUTES = [server_metadata, server_live, server_ready, model_metadata, model_ready]
OIP_PREDICTION_ROUTES = [infer]
