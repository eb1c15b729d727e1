"""Read a mammogram from DICOM, PGM or PNG into one float32 array in [0, 1] plus a few safe attributes.

Every reader returns the same thing, :class:`MammoImage`, with bright = dense tissue whatever the file's
Photometric Interpretation, so nothing downstream needs to know where an image came from::

    from mammo_utils.prepare.io import read_image

    image = read_image("mias/mdb001.pgm")
    image.pixels.shape, image.pixels.dtype  # (1024, 1024), float32

Every failure is a :class:`mammo_utils.errors.DataError` whose message names the file and says what to
do. See :mod:`mammo_utils.prepare.io.dicom` for the DICOM greyscale pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mammo_utils.errors import DataError
from mammo_utils.prepare.io.dicom import read_dicom
from mammo_utils.prepare.io.raster import read_pgm, read_png

__all__ = ["MammoImage", "read_image", "SUPPORTED_SUFFIXES"]

_DICOM_SUFFIXES = (".dcm", ".dicom")
SUPPORTED_SUFFIXES = (*_DICOM_SUFFIXES, ".pgm", ".png")


@dataclass(frozen=True)
class MammoImage:
    """One greyscale image and the technical attributes a pipeline needs (never names, IDs or dates).

    Attributes:
        pixels: float32 array of shape (H, W), values in [0, 1], bright = dense tissue.
        laterality: "L", "R" or None (DICOM Image Laterality, else Laterality).
        view: The DICOM view code as written ("CC", "MLO", "ML", ...) or None.
        photometric: DICOM Photometric Interpretation, e.g. "MONOCHROME2"; None for PGM/PNG.
        presentation_intent: "FOR PRESENTATION", "FOR PROCESSING" or None.
        modality: DICOM Modality ("MG", "CT", ...); None for PGM/PNG.
        bits_stored: Bits per stored sample (DICOM Bits Stored; for PGM the bit length of maxval).
    """

    pixels: np.ndarray
    laterality: str | None
    view: str | None
    photometric: str | None
    presentation_intent: str | None
    modality: str | None
    bits_stored: int


def _looks_like_dicom(path: Path) -> bool:
    """True if the file has the DICOM 'DICM' marker after its 128-byte preamble."""
    with path.open("rb") as handle:
        return handle.read(132)[128:] == b"DICM"


def read_image(path: str | Path, *, require_mammography: bool = False) -> MammoImage:
    """Read a DICOM (.dcm/.dicom), binary PGM (.pgm) or PNG (.png) image.

    A file without an extension is read as DICOM if it carries the 'DICM' marker.

    Args:
        path: The image file.
        require_mammography: If True, a DICOM whose Modality is not "MG" is refused. PGM and PNG files
            carry no modality and are accepted.

    Returns:
        The image as a :class:`MammoImage`.

    Raises:
        DataError: If the file is missing, of an unknown type, corrupt or not a usable image.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"Image file {path} does not exist; check the path, or run `python -m mammo_utils prepare` "
            "to extract the dataset first."
        )
    suffix = path.suffix.lower()
    if suffix in _DICOM_SUFFIXES or (suffix == "" and _looks_like_dicom(path)):
        pixels, attrs = read_dicom(path, require_mammography=require_mammography)
        return MammoImage(pixels=pixels, **attrs)
    if suffix == ".pgm":
        pixels, bits = read_pgm(path)
    elif suffix == ".png":
        pixels, bits = read_png(path)
    else:
        raise DataError(
            f"{path} has an unsupported extension '{path.suffix}'; give it one of "
            f"{', '.join(SUPPORTED_SUFFIXES)} (convert other formats to PNG first)."
        )
    return MammoImage(
        pixels=pixels,
        laterality=None,
        view=None,
        photometric=None,
        presentation_intent=None,
        modality=None,
        bits_stored=bits,
    )
