"""Open Inference Protocol v2 bodies (msgspec Structs): metadata, readiness, infer request and response."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec


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
