"""Image bytes out of a request: a raw body, or multipart parts parsed in memory.

Litestar's own form parsing spools files over 1 MiB to a temporary file; uploads must never touch
disk, so multipart bodies are parsed here, chunk by chunk as they arrive, into memory. The body size
limit (413) is enforced while streaming by Litestar (`request_max_body_size`). Client file names
and content types are ignored: the format is sniffed from the bytes later.
"""

from __future__ import annotations

from litestar import Request
from multipart import MultipartSegment, ParserError, ParserLimitReached, PushMultipartParser

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

IMAGE_FIELDS = frozenset({"file", "files"})
_EXTRA_PARTS = 8  # non-image form fields tolerated (and ignored) beside the images


async def single_image(request: Request) -> bytes:
    """The image of a /v1/predict-style request: multipart field `file`, or the raw body."""
    if request.content_type[0] != "multipart/form-data":
        return await request.body()
    images = await multipart_images(request, max_images=1)
    if not images:
        raise BadRequest("the multipart field 'file' is missing")
    return images[0]


async def multipart_images(request: Request, max_images: int) -> list[bytes]:
    """Every image part (fields `file` or `files`), in order; more than `max_images` is refused."""
    media_type, options = request.content_type
    if media_type != "multipart/form-data":
        raise UnsupportedMediaType("send the images as multipart/form-data")
    boundary = options.get("boundary")
    if not boundary:
        raise BadRequest("the multipart boundary is missing from Content-Type")
    images: list[bytes] = []
    part: bytearray | None = None
    try:
        parser = PushMultipartParser(
            boundary, max_header_size=4096, max_header_count=8, max_segment_count=max_images + _EXTRA_PARTS
        )
        async for chunk in request.stream():
            for event in parser.parse(chunk):
                if isinstance(event, MultipartSegment):
                    part = bytearray() if event.name in IMAGE_FIELDS else None
                elif event is None:
                    if part is not None:
                        images.append(bytes(part))
                        if len(images) > max_images:
                            raise _too_many(max_images)
                    part = None
                elif part is not None:
                    part += event
        parser.close()
    except ParserLimitReached:
        raise _too_many(max_images) from None
    except ParserError:
        raise BadRequest("the multipart body is malformed") from None
    return images


def _too_many(max_images: int) -> PayloadTooLarge:
    noun = "image" if max_images == 1 else "images"
    return PayloadTooLarge(f"at most {max_images} {noun} per request")
