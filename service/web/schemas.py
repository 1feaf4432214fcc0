"""Response bodies of the REST API (msgspec Structs: exact OpenAPI schema, fast encoding)."""

from __future__ import annotations

import msgspec

from service.card import ModelCard, ModelFile


class ErrorBody(msgspec.Struct, frozen=True):
    error: str  # stable machine-readable code, e.g. "invalid_image"
    detail: str  # human-readable; never carries paths, tracebacks or internal names
    request_id: str


class ModelRef(msgspec.Struct, frozen=True):
    name: str
    version: str
    variant: str
    sha256: str


class Timings(msgspec.Struct, frozen=True):
    decode_ms: float
    queue_ms: float
    inference_ms: float
    total_ms: float


class OodResult(msgspec.Struct, frozen=True):
    """The out-of-distribution gate's reading of one image (service/trust/gate.py)."""

    score: float  # higher is stranger
    threshold: float  # the card's: above it the image is out of distribution
    in_distribution: bool


class Prediction(msgspec.Struct, frozen=True):
    label: str | None  # None when abstained: never act on a missing label
    abstained: bool  # the OOD gate withheld the label (OOD_POLICY=abstain)
    reason: str | None  # why, in one line, when abstained
    probability: float  # calibrated P(not normal), compared with `threshold`; kept for inspection
    probabilities: dict[str, float]  # every label
    threshold: float
    ood: OodResult | None  # None when OOD_POLICY=off or the model has no gate
    model: ModelRef
    timings: Timings
    request_id: str


class ItemResult(msgspec.Struct, frozen=True):
    label: str | None
    abstained: bool
    reason: str | None
    probability: float
    probabilities: dict[str, float]
    ood: OodResult | None


class ItemError(msgspec.Struct, frozen=True):
    error: str
    detail: str


class BatchItem(msgspec.Struct, frozen=True):
    index: int  # position of the image in the request
    result: ItemResult | None = None
    error: ItemError | None = None


class BatchPrediction(msgspec.Struct, frozen=True):
    results: list[BatchItem]
    threshold: float
    model: ModelRef
    timings: Timings  # decode and queue/inference summed over images; total for the request
    request_id: str


class Box(msgspec.Struct, frozen=True):
    left: int
    top: int
    width: int
    height: int


class Explanation(msgspec.Struct, frozen=True):
    label: str | None
    abstained: bool
    reason: str | None
    probability: float
    probabilities: dict[str, float]
    threshold: float
    ood: OodResult | None
    target: str  # the label the heatmap shows evidence for
    channel: int  # the CAM channel used
    sign: float  # -1 where the channel is negated (binary card, target = normal label)
    cam: list[list[float]]  # sign * cam[channel], (h, w) at model resolution
    cam_shape: list[int]  # the model's cam output for one image: (K, h, w)
    input_size: int  # side of the model's square input
    image_region: Box  # where the letterboxed image lies in that square
    image_width: int
    image_height: int
    model: ModelRef
    timings: Timings
    request_id: str


# The public view of the card is derived from the card's own definition, so a field added to the card
# appears in GET /v1/model (and its schema) without being written again; only file paths stay private.
PublicFile = msgspec.defstruct(
    "PublicFile",
    [(f.name, f.type) for f in msgspec.structs.fields(ModelFile) if f.name != "path"],
    frozen=True,
    module=__name__,
)


def public_view(card_type: type[ModelCard]) -> type[msgspec.Struct]:
    """Every field of the card type, files without their paths, and which file this process serves."""
    fields = msgspec.structs.fields(card_type)
    return msgspec.defstruct(
        "ModelInfo",
        [(f.name, dict[str, PublicFile] if f.name == "files" else f.type) for f in fields]
        + [("variant", str), ("sha256", str), ("shadow", ModelRef | None)],
        frozen=True,
        module=__name__,
    )


ModelInfo = public_view(ModelCard)


def model_info(card: ModelCard, served: ModelRef, shadow: ModelRef | None) -> ModelInfo:
    """The primary's card as served (`served`: its variant and sha256) and the shadow candidate's reference."""
    public = msgspec.to_builtins(card)
    for entry in public["files"].values():
        del entry["path"]
    extra = {"variant": served.variant, "sha256": served.sha256, "shadow": msgspec.to_builtins(shadow)}
    return msgspec.convert(public | extra, ModelInfo)


class ProbabilityDifference(msgspec.Struct, frozen=True):
    mean: float
    p50: float
    p90: float
    p99: float
    max: float


class ShadowSummary(msgspec.Struct, frozen=True):
    """GET /v1/shadow (service.inference.shadow_tally)."""

    active: bool
    candidate: ModelRef | None = None
    sample: float | None = None  # the share of requests offered to the candidate
    since: str | None = None  # when the counts started (candidate loaded or reset), ISO 8601 UTC
    compared: int = 0  # images both models answered
    agree: int = 0  # the same label (abstained counts as a label)
    disagree: int = 0
    dropped: int = 0  # offered but not compared: its queue was full, or the input was not the candidate's
    errors: int = 0  # the candidate failed on them
    agreement: float | None = None
    agreement_interval: list[float] | None = None  # 95% Wilson interval
    labels: dict[str, dict[str, int]] = {}  # primary label -> candidate label -> images
    probability_difference: ProbabilityDifference | None = None  # |P(not normal) primary - candidate|


class Health(msgspec.Struct, frozen=True):
    status: str  # "live" | "ready" | "starting" | "draining"
