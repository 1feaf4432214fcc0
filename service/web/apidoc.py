"""OpenAPI details Litestar cannot infer: image request bodies (read by hand, never spooled to disk),
the PNG-or-JSON explain response, the error responses, and the schema config (JSON only; /docs is an
offline page of our own, see service/static/docs.html)."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    RequestBody,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIFormat, OpenAPIType

from service.web.schemas import ErrorBody

_BINARY = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
# application/dicom: a DICOM Part 10 file (one CT slice), windowed as the model card says.
_RAW_IMAGE = {media: OpenAPIMediaType(schema=_BINARY) for media in ("image/png", "image/jpeg", "application/dicom")}


def _error(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description, generate_examples=False)


ERROR_RESPONSES = {
    400: _error("Malformed request, or the image is truncated or corrupt"),
    401: _error("Missing or wrong API key (only when API_KEY is set)"),
    408: _error("The request body did not arrive within the deadline"),
    413: _error("The body, or the number of images, is over the limit"),
    415: _error("The bytes are neither PNG, JPEG nor DICOM, or a DICOM transfer syntax has no decoder here"),
    422: _error(
        "The image cannot be used: dimensions, pixel count, frames; for DICOM also a Modality other than"
        " DICOM_ALLOW_MODALITIES (CT), several frames, or missing or inconsistent pixel attributes"
    ),
    503: _error("Overloaded, past the deadline, or not ready (see Retry-After)"),
}
MODEL_NOT_FOUND = {404: _error("No model of that name (or version) is served")}


def not_ready(body: type) -> dict[int, ResponseSpec]:
    """A readiness probe's 503: the same body as its 200, saying why (starting, draining)."""
    return {503: ResponseSpec(data_container=body, description="Not ready: starting or draining")}


@dataclass
class SingleImageOperation(Operation):
    def __post_init__(self) -> None:
        form = Schema(type=OpenAPIType.OBJECT, properties={"file": _BINARY}, required=["file"])
        self.request_body = RequestBody(
            required=True,
            description="One PNG, JPEG or DICOM (Part 10, one CT slice) image: multipart field `file`, or the "
            "raw body. The format is sniffed from the bytes; file names and content types are ignored. A DICOM "
            "slice's Hounsfield units are shown through the model card's `input.dicom_window` (the lung window).",
            content={"multipart/form-data": OpenAPIMediaType(schema=form), **_RAW_IMAGE},
        )


@dataclass
class ManyImagesOperation(Operation):
    def __post_init__(self) -> None:
        files = Schema(type=OpenAPIType.ARRAY, items=_BINARY)
        form = Schema(type=OpenAPIType.OBJECT, properties={"files": files}, required=["files"])
        self.request_body = RequestBody(
            required=True,
            description="Several PNG, JPEG or DICOM images as repeated multipart fields `files` (or `file`).",
            content={"multipart/form-data": OpenAPIMediaType(schema=form)},
        )


@dataclass
class ExplainOperation(SingleImageOperation):
    def __post_init__(self) -> None:
        super().__post_init__()
        ok = self.responses.get("200") if self.responses else None
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            ok.content = {"image/png": OpenAPIMediaType(schema=_BINARY), **ok.content}
            ok.description = "PNG heatmap overlay by default; the numbers with `Accept: application/json`"


def _object(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    return Schema(type=OpenAPIType.OBJECT, properties=properties, required=required)


_SCALAR = Schema(type=[OpenAPIType.STRING, OpenAPIType.NUMBER, OpenAPIType.BOOLEAN])
_ANY_OBJECT = Schema(type=OpenAPIType.OBJECT, additional_properties=_SCALAR)
_INFER_INPUT = _object(
    {
        "name": Schema(type=OpenAPIType.STRING),
        "shape": Schema(type=OpenAPIType.ARRAY, items=Schema(type=OpenAPIType.INTEGER), max_items=8),
        "datatype": Schema(type=OpenAPIType.STRING, description="FP32 (preprocessed) or BYTES (base64 images)"),
        "data": Schema(
            type=OpenAPIType.ARRAY,
            items=Schema(type=[OpenAPIType.NUMBER, OpenAPIType.STRING]),
            description="FP32: numbers, flat (row-major; nested arrays are accepted too); BYTES: base64 strings. "
            "Absent when the tensor is sent as binary data",
        ),
        "parameters": Schema(
            type=OpenAPIType.OBJECT,
            additional_properties=_SCALAR,
            description="`binary_data_size`: the tensor's bytes after the JSON header (binary tensor data "
            "extension); other keys are ignored",
        ),
    },
    required=["name", "shape", "datatype"],
)
_INFER_REQUEST = _object(
    {
        "inputs": Schema(type=OpenAPIType.ARRAY, items=_INFER_INPUT, max_items=8),
        "id": Schema(one_of=[Schema(type=OpenAPIType.STRING), Schema(type=OpenAPIType.NULL)]),
        "parameters": _ANY_OBJECT,
        "outputs": Schema(
            one_of=[
                Schema(
                    type=OpenAPIType.ARRAY,
                    items=_object({"name": Schema(type=OpenAPIType.STRING), "parameters": _ANY_OBJECT}, ["name"]),
                    max_items=8,
                ),
                Schema(type=OpenAPIType.NULL),
            ]
        ),
    },
    required=["inputs"],
)


@dataclass
class InferOperation(Operation):
    """The OIP infer body, decoded by hand (service.oip.routes) so that tensor data stays raw until checked."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="Open Inference Protocol request: one FP32 or BYTES input tensor. With the binary "
            "tensor data extension (Triton's, what tritonclient sends by default) the body is this JSON header, "
            "then the raw tensor: the `Inference-Header-Content-Length` header gives the JSON's length in bytes, "
            "the input's `parameters.binary_data_size` the raw part's (FP32: little-endian float32; BYTES: each "
            "file as a 4-byte little-endian length, then its bytes). Outputs come as binary data when a requested "
            "output has `parameters.binary_data: true` or the request `parameters.binary_data_output: true`; "
            "the answer then carries the same header and is application/octet-stream.",
            content={
                "application/json": OpenAPIMediaType(schema=_INFER_REQUEST),
                "application/octet-stream": OpenAPIMediaType(
                    schema=Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
                ),
            },
        )


def openapi_config(title: str, version: str, with_api_key: bool, with_admin: bool = False) -> OpenAPIConfig:
    schemes = {}
    if with_api_key:
        schemes["apiKey"] = SecurityScheme(type="apiKey", name="X-API-Key", security_scheme_in="header")
    if with_admin:
        schemes["adminKey"] = SecurityScheme(type="apiKey", name="X-Admin-Key", security_scheme_in="header")
    return OpenAPIConfig(
        title=title,
        version=version,
        description="Chest CT slice classifier. Research use only, not a diagnosis.",
        path="/schema",
        render_plugins=[JsonRenderPlugin()],
        components=Components(security_schemes=schemes) if schemes else Components(),
        use_handler_docstrings=True,
    )
