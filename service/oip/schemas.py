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
    """An output tensor: `data` in JSON, or none and `parameters.binary_data_size` (service.oip.binary)."""

    name: str
    shape: list[int]
    datatype: str
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


# Request fields that could hold millions of values stay raw JSON (validated, never turned into Python
# objects) until the declared shape is checked: as Python floats, an 8 MiB body of numbers took
# ~70 MB, and 64 such requests at once took the process past 4 GB.
_Few = msgspec.Meta(max_length=8)


class TensorParameters(msgspec.Struct, frozen=True):
    """The tensor parameters this service reads (the binary extension's); any other key is ignored."""

    binary_data_size: Annotated[int, msgspec.Meta(ge=0)] | None = None  # on an input: its bytes after the header
    binary_data: bool = False  # on a requested output: send it as binary data


class RequestParameters(msgspec.Struct, frozen=True):
    binary_data_output: bool = False  # every output as binary data (tritonclient's default)


class InferInput(msgspec.Struct, frozen=True):
    """An input tensor: `data` flat (row-major) or nested, BYTES elements base64 strings; or no `data`
    and `parameters.binary_data_size` bytes after the JSON header (service.oip.binary)."""

    name: str
    shape: Annotated[list[int], _Few]
    datatype: str
    data: msgspec.Raw = msgspec.Raw()  # empty when absent (msgspec takes no Raw | None)
    parameters: TensorParameters = TensorParameters()


class RequestedOutput(msgspec.Struct, frozen=True):
    name: str
    parameters: TensorParameters = TensorParameters()


class InferRequest(msgspec.Struct, frozen=True):
    inputs: Annotated[list[InferInput], _Few]
    id: str | None = None
    parameters: RequestParameters = RequestParameters()
    outputs: Annotated[list[RequestedOutput], _Few] | None = None


class InferResponse(msgspec.Struct, frozen=True, omit_defaults=True):
    model_name: str
    model_version: str
    outputs: list[InferTensor]
    id: str | None = None
