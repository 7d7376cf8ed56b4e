"""Images as the teacher sees them: re-encoded, resized, as base64 data URLs."""

from __future__ import annotations

import base64
import io

from PIL import Image

from ..data.pixel_limit import open_image

__all__ = ["encode_image", "image_data_url"]

_MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}


def encode_image(data: bytes, max_side: int, image_format: str = "jpeg", quality: int = 90) -> bytes:
    """Decode ``data``, shrink it to ``max_side`` on its longest side, re-encode it.

    Images are converted to RGB (alpha dropped onto white), never enlarged; the output is
    the same for the same input and settings.

    Raises:
        ValueError: when ``data`` is not a readable image, or has more pixels than PIL's
            ``Image.MAX_IMAGE_PIXELS`` (an ``OversizedImageError``, raised before decoding).
    """
    try:
        with open_image(data) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "P"):
                image = image.convert("RGBA")
                background = Image.new("RGB", image.size, (255, 255, 255))
                background.paste(image, mask=image.getchannel("A"))
                image = background
            elif image.mode != "RGB":
                image = image.convert("RGB")
            if max(image.size) > max_side:
                image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            out = io.BytesIO()
            options = {"quality": quality} if image_format in ("jpeg", "webp") else {}
            image.save(out, format=image_format.upper(), **options)
            return out.getvalue()
    except OSError as error:
        raise ValueError(f"Unreadable image: {error}") from error


def image_data_url(data: bytes, max_side: int, image_format: str = "jpeg", quality: int = 90) -> str:
    """``data:image/...;base64,...`` of the re-encoded image (see :func:`encode_image`)."""
    encoded = base64.b64encode(encode_image(data, max_side, image_format, quality)).decode("ascii")
    return f"data:{_MIME[image_format]};base64,{encoded}"
