"""OIP tensors <-> the runtime: an infer request's input tensor to images (FP32 preprocessed or BYTES
encoded files), and the results to output tensors, each as JSON data or binary data (service.oip.binary).
Shapes and counts are checked before data is parsed."""

from __future__ import annotations

import base64
import binascii
import re
import warnings
from typing import Annotated, Any

import msgspec
import numpy as np

from service.errors import BadRequest, PayloadTooLarge
from service.inference.runtime import Classified, Runtime
from service.inference.served import ServedModel
from service.oip import binary
from service.oip.schemas import InferInput, InferRequest, InferTensor

OUTPUTS = ("logits", "cam", "probabilities", "label")
TRUST_OUTPUTS = ("ood_score", "abstained")  # while the OOD gate is on; `label` is "" where abstained


def outputs_of(model: ServedModel) -> tuple[str, ...]:
    return OUTPUTS + TRUST_OUTPUTS if model.gate.active else OUTPUTS


def decode_request(body: bytes) -> InferRequest:
    # By hand, not Litestar's JSONBody: that decodes to Python objects first, which is the cost avoided.
    try:
        return msgspec.json.decode(body, type=InferRequest)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(str(exc)) from None


def fp32_images(
    rt: Runtime, model: ServedModel, tensor: InferInput, part: memoryview | None = None
) -> list[np.ndarray]:
    """Inputs preprocessed for `model`; `part`: the tensor's binary data, None when it came as JSON `data`."""
    size = model.card.input.size
    shape = tensor.shape
    if len(shape) != 4 or shape[1:] != [1, size, size] or shape[0] < 1:
        raise BadRequest(f"an FP32 input must have shape [N, 1, {size}, {size}]")
    _check_count(rt, shape[0])
    count = int(np.prod(shape))
    array = binary.fp32_array(part, count, shape) if part is not None else _numbers(_json_data(tensor), count, shape)
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


def bytes_files(rt: Runtime, tensor: InferInput, part: memoryview | None = None) -> list[bytes]:
    """`part`: the tensor's binary data (length-prefixed files), None when it came as JSON `data`."""
    shape = tensor.shape
    if len(shape) != 1 or shape[0] < 1:
        raise BadRequest("a BYTES input must have shape [N] and N base64-encoded image files")
    _check_count(rt, shape[0])
    if part is not None:
        return binary.bytes_elements(part, shape[0])
    try:
        data = _json_data(tensor)
        items = msgspec.json.decode(data, type=Annotated[list[Any], msgspec.Meta(max_length=shape[0])])
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


def _json_data(tensor: InferInput) -> msgspec.Raw:
    if not len(tensor.data):
        raise BadRequest(f"input {tensor.name!r} has neither data nor a binary_data_size parameter")
    return tensor.data


def _check_count(rt: Runtime, count: int) -> None:
    if count > rt.settings.max_batch_files:
        raise PayloadTooLarge(f"at most {rt.settings.max_batch_files} images per request")


def wanted_outputs(model: ServedModel, data: InferRequest) -> list[tuple[str, bool]]:
    """(name, as binary data) of each output to send: those the request names, else all of them."""
    offered = outputs_of(model)
    if not data.outputs:
        return [(name, data.parameters.binary_data_output) for name in offered]
    unknown = [o.name for o in data.outputs if o.name not in offered]
    if unknown:
        raise BadRequest(f"unknown output {unknown[0]!r}; outputs are {', '.join(offered)}")
    return [(o.name, o.parameters.binary_data or data.parameters.binary_data_output) for o in data.outputs]


def output_tensor(
    model: ServedModel, name: str, results: list[Classified], as_binary: bool
) -> tuple[InferTensor, bytes]:
    """The output's tensor, and its binary data (b"" when it is sent as JSON data)."""
    datatype, array = _output_array(model, name, results)
    shape = list(array.shape)
    if as_binary:
        raw = binary.encode_array(array, datatype)
        return InferTensor(name, shape, datatype, parameters={"binary_data_size": len(raw)}), raw
    return InferTensor(name, shape, datatype, array.reshape(-1).tolist()), b""


def _output_array(model: ServedModel, name: str, results: list[Classified]) -> tuple[str, np.ndarray]:
    if name == "label":
        return "BYTES", np.asarray([r.label or "" for r in results], dtype=object)
    if name == "abstained":
        return "BOOL", np.asarray([r.verdict is not None and r.verdict.abstained for r in results], dtype=np.bool_)
    if name == "ood_score":
        return "FP32", np.asarray([r.outcome.ood_score for r in results], dtype=np.float32)
    if name == "probabilities":
        rows = [[r.decision.probabilities[label] for label in model.card.labels] for r in results]
        return "FP32", np.asarray(rows, dtype=np.float32)
    array = np.stack([r.outcome.logits if name == "logits" else r.outcome.cam for r in results])
    return "FP32", array.astype(np.float32)
