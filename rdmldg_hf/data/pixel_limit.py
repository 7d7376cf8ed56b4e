"""The pixel limit: images too large to decode safely are bad input, read from the header only.

PIL refuses to open images over twice ``Image.MAX_IMAGE_PIXELS`` (a decompression bomb) and
only warns between one and two times it; both are reported here the same way, before a
single pixel is decoded, so that a build skips such a file and evaluation reports it.
"""

from __future__ import annotations

import io
import os
import warnings
from typing import IO

from PIL import Image

__all__ = ["OversizedImageError", "pixel_limit", "check_pixels", "open_image"]


class OversizedImageError(ValueError):
    """An image with more pixels than the limit (never decoded)."""


def pixel_limit(max_pixels: int | None = None) -> int | None:
    """``max_pixels`` when given, else PIL's ``Image.MAX_IMAGE_PIXELS`` (None: no limit)."""
    return max_pixels if max_pixels is not None else Image.MAX_IMAGE_PIXELS


def check_pixels(image: Image.Image, max_pixels: int | None = None) -> Image.Image:
    """``image`` (opened, not decoded) if its header size is within the limit.

    Raises:
        OversizedImageError: naming its size, the limit and the fix (the image is closed).
    """
    limit = pixel_limit(max_pixels)
    width, height = image.size
    if limit is not None and width * height > limit:
        image.close()
        raise OversizedImageError(
            f"{width}x{height} image ({width * height:,} pixels) is over the pixel limit of {limit:,}; "
            "not decoded (raise the limit with --max-pixels if the image is trusted)"
        )
    return image


def open_image(
    source: str | os.PathLike | bytes | bytearray | IO[bytes], max_pixels: int | None = None
) -> Image.Image:
    """Open an image lazily (header only) from a path, bytes or a file object, refusing oversized ones.

    Raises:
        OversizedImageError: over ``max_pixels`` (default PIL's limit) or PIL's decompression-bomb limit.
        OSError: not an image (PIL's ``UnidentifiedImageError``) or unreadable.
    """
    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    try:
        with warnings.catch_warnings():  # the size is checked below, against the limit asked for
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except Image.DecompressionBombError as error:
        raise OversizedImageError(
            f"image over PIL's decompression-bomb limit ({error}); not decoded "
            "(raise the limit with --max-pixels if the image is trusted)"
        ) from None
    return check_pixels(image, max_pixels)
