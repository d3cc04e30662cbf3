"""Schemathesis hooks: real pictures where the API's OpenAPI document asks for an uploaded picture.

The document says an upload is a file (`format: binary`) of one of the accepted media types
(`encoding.contentType`), but a random byte string is no picture, and the server rightly answers 422. This
strategy draws small pictures in every accepted format instead. `schemathesis.toml` at the repository root
loads this file, so `schemathesis run http://127.0.0.1:8000/openapi.json --checks all` run from there uses it.
"""

from __future__ import annotations

import io

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # what the API accepts (t2i_helpers.serve.uploads)


def _encode(drawn: tuple[str, int, int, int]) -> bytes:
    image_format, width, height, seed = drawn
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


# 1 to 32 pixels a side, random pixels, any accepted format
pictures = st.tuples(st.sampled_from(FORMATS), st.integers(1, 32), st.integers(1, 32), st.integers(0, 2**32 - 1))
schemathesis.openapi.format("binary", pictures.map(_encode))
