"""Readers for the plain raster formats: binary PGM (mini-MIAS) and greyscale PNG.

Both return pixels as float32 in [0, 1] (the stored value divided by the format's maximum, so no
contrast stretch) together with the number of bits a sample needs.

The PGM parser is our own rather than Pillow's so that a broken header or a truncated download gives a
message that says which file and what is wrong. Format reference: https://netpbm.sourceforge.net/doc/pgm.html
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mammo_utils.errors import DataError

logger = logging.getLogger(__name__)

_WHITESPACE = b" \t\r\n\v\f"


def _parse_pgm_header(data: bytes, path: Path) -> tuple[int, int, int, int]:
    """Parse the header of a binary (P5) PGM.

    Args:
        data: The whole file's bytes.
        path: The file, for error messages.

    Returns:
        ``(width, height, maxval, offset)``: image size in pixels, the largest sample value, and the
        byte offset where the raster starts.

    Raises:
        DataError: If the header is not a valid P5 header.
    """
    if data[:2] != b"P5":
        found = data[:2].decode("latin-1").encode("unicode_escape").decode("ascii")
        raise DataError(
            f"{path} is not a binary PGM file: it starts with '{found}' instead of 'P5'; "
            "convert it to binary PGM (P5) or PNG."
        )
    fields: list[int] = []
    pos = 2
    while len(fields) < 3:
        # Skip whitespace and comments; a comment runs from '#' to the end of the line.
        while pos < len(data) and (data[pos] in _WHITESPACE or data[pos : pos + 1] == b"#"):
            if data[pos : pos + 1] == b"#":
                end = data.find(b"\n", pos)
                pos = len(data) if end < 0 else end + 1
            else:
                pos += 1
        start = pos
        while pos < len(data) and data[pos] not in _WHITESPACE and data[pos : pos + 1] != b"#":
            pos += 1
        token = data[start:pos]
        if not token.isdigit():
            name = ("width", "height", "maxval")[len(fields)]
            shown = token[:20].decode("latin-1") if token else "end of file"
            raise DataError(
                f"{path} has a broken PGM header: expected the {name} as a number but found "
                f"'{shown}'; the file is corrupt, download or convert it again."
            )
        fields.append(int(token))
    width, height, maxval = fields
    if width < 1 or height < 1 or not 1 <= maxval <= 65535:
        raise DataError(
            f"{path} has an invalid PGM header (width {width}, height {height}, maxval {maxval}; "
            "maxval must be 1..65535); the file is corrupt, download or convert it again."
        )
    if pos >= len(data) or data[pos] not in _WHITESPACE:
        raise DataError(
            f"{path} has a broken PGM header: no whitespace after maxval {maxval}; "
            "the file is corrupt, download or convert it again."
        )
    return width, height, maxval, pos + 1  # exactly one whitespace byte separates header and raster


def read_pgm(path: Path) -> tuple[np.ndarray, int]:
    """Read a binary (P5) PGM image, 8 or 16 bits per sample, comments allowed in the header.

    Args:
        path: The ``.pgm`` file.

    Returns:
        ``(pixels, bits_stored)``: float32 array of shape (height, width), the stored values divided
        by maxval, and the bit length of maxval (8 for maxval 255, 16 for 65535).

    Raises:
        DataError: If the header is invalid or the raster is shorter than the header promises.
    """
    data = path.read_bytes()
    width, height, maxval, offset = _parse_pgm_header(data, path)
    # PGM stores samples above 255 as two bytes, most significant first.
    dtype = np.dtype(">u2") if maxval > 255 else np.dtype("u1")
    expected = width * height * dtype.itemsize
    available = len(data) - offset
    if available < expected:
        raise DataError(
            f"{path} is truncated: its PGM header promises {width}x{height} pixels ({expected} bytes) "
            f"but only {available} bytes follow; download or extract the file again."
        )
    if available > expected:
        logger.debug("%s: ignoring %d bytes after the first PGM image", path, available - expected)
    raw = np.frombuffer(data, dtype=dtype, count=width * height, offset=offset).reshape(height, width)
    if int(raw.max()) > maxval:
        raise DataError(
            f"{path} has pixel values above its PGM maxval {maxval}; the file is corrupt, "
            "download or convert it again."
        )
    pixels = raw.astype(np.float32) / np.float32(maxval)
    return pixels, maxval.bit_length()


def read_png(path: Path) -> tuple[np.ndarray, int]:
    """Read a PNG as a greyscale image; colour images are converted to grey (ITU-R 601-2 luma).

    Args:
        path: The ``.png`` file.

    Returns:
        ``(pixels, bits_stored)``: float32 array of shape (height, width) divided by 255 (8-bit) or
        65535 (16-bit), and 8 or 16.

    Raises:
        DataError: If Pillow cannot open or decode the file.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                # Pillow opens 16-bit greyscale PNGs as I;16 (or I in older versions).
                raw = np.asarray(image).astype(np.uint16, copy=False)
                bits, maxval = 16, 65535
            else:
                if image.mode != "L":
                    logger.debug("%s: converting PNG mode %s to greyscale", path, image.mode)
                    image = image.convert("L")
                raw = np.asarray(image)
                bits, maxval = 8, 255
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path} could not be read as a PNG ({exc}); the file is truncated or corrupt, "
            "download or convert it again."
        ) from exc
    if raw.ndim != 2:
        raise DataError(
            f"{path} is not a single-channel image (shape {raw.shape}); save it as greyscale PNG."
        )
    return raw.astype(np.float32) / np.float32(maxval), bits
