"""DICOM reader: decoded, LUT-corrected pixels as float32 in [0, 1] with bright = dense tissue.

The greyscale pipeline follows DICOM PS3.3 C.11 and uses pydicom's own functions:

1. Decode the first frame (multi-frame files: frame 0 only; mammograms are single-frame images).
   Compressed transfer syntaxes (JPEG 2000, JPEG lossless/baseline/extended, JPEG-LS, RLE) are decoded by
   the pylibjpeg plugins; a missing plugin is reported with the pip package to install.
2. ``pydicom.pixels.apply_modality_lut`` (Rescale Slope/Intercept or Modality LUT Sequence).
3. ``pydicom.pixels.apply_voi_lut`` (VOI LUT Sequence preferred, else Window Center/Width), then scaled by
   the VOI's own output range. Without any VOI: min-max of the modality output.
4. Inversion, at most once. ``apply_voi_lut`` does not look at MONOCHROME1, so its output is still "low =
   white". Presentation LUT Shape INVERSE on a MONOCHROME1 image (required by the DX/MG IODs, e.g.
   ``dx_image.dcm``) restates that same inversion; it is not a second one. So the image is inverted when
   it is MONOCHROME1 *or* its Presentation LUT Shape is INVERSE, never twice, and
   ``apply_presentation_lut`` (which would invert again) is not called. A Presentation LUT *Sequence*
   is ignored.

Only a few technical attributes are returned; names, IDs and dates in the header are never read out.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypedDict

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from mammo_utils.errors import DataError

logger = logging.getLogger(__name__)

_PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_PIXEL_DATA_TAG_LE = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian
_PIXEL_DATA_TAG_BE = b"\x7f\xe0\x00\x10"

# View codes that CBIS-DDSM (and DDSM conversions) put in Patient Orientation instead of View Position.
_MAMMO_VIEWS = frozenset({"CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "AT", "CV"})

_PIP_PLUGINS = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg-libjpeg",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51": "pylibjpeg-libjpeg",  # JPEG Extended
    "1.2.840.10008.1.2.4.57": "pylibjpeg-libjpeg",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": "pylibjpeg-libjpeg",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80": "pylibjpeg-libjpeg",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": "pylibjpeg-libjpeg",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": "pylibjpeg-openjpeg",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": "pylibjpeg-openjpeg",  # JPEG 2000
    "1.2.840.10008.1.2.4.201": "pylibjpeg-openjpeg",  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": "pylibjpeg-openjpeg",  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": "pylibjpeg-openjpeg",  # HTJ2K
    "1.2.840.10008.1.2.5": "pylibjpeg-rle",  # RLE Lossless
}


class DicomAttributes(TypedDict):
    """The safe, technical header attributes that go into :class:`mammo_utils.prepare.io.MammoImage`."""

    laterality: str | None
    view: str | None
    photometric: str | None
    presentation_intent: str | None
    modality: str | None
    bits_stored: int


def _text(ds: Dataset, keyword: str) -> str | None:
    """Return a single-valued text element stripped and upper-cased, or None if absent or empty."""
    value = ds.get(keyword)
    if value is None or isinstance(value, (list, MultiValue)):
        return None
    text = str(value).strip().upper()
    return text or None


def _view(ds: Dataset) -> str | None:
    """View Position as written (no ML→MLO mapping); else a mammography view code in Patient Orientation.

    CBIS-DDSM carries no View Position and stores "CC"/"MLO" in (0020,0020) Patient Orientation; a real
    orientation such as ``["L", "F"]`` is two values and is not taken as a view.
    """
    view = _text(ds, "ViewPosition")
    if view is not None:
        return view
    orientation = _text(ds, "PatientOrientation")
    return orientation if orientation in _MAMMO_VIEWS else None


def _attributes(ds: Dataset) -> DicomAttributes:
    """Collect the technical attributes; never names, IDs or dates."""
    laterality = _text(ds, "ImageLaterality") or _text(ds, "Laterality")
    return DicomAttributes(
        laterality=laterality if laterality in ("L", "R") else None,
        view=_view(ds),
        photometric=_text(ds, "PhotometricInterpretation"),
        presentation_intent=_text(ds, "PresentationIntentType"),
        modality=_text(ds, "Modality"),
        bits_stored=int(ds.get("BitsStored") or 0),
    )


def _check_decoder(ds: Dataset, path: Path) -> UID:
    """Return the transfer syntax after checking that pydicom has a working decoder for it."""
    tsyntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise DataError(
            f"{path} uses transfer syntax {tsyntax.name} ({tsyntax}), which pydicom cannot decode; "
            "convert it to an uncompressed DICOM (e.g. with dcmtk's dcmdjpeg or gdcmconv --raw)."
        ) from None
    if not decoder.is_available:
        package = _PIP_PLUGINS.get(str(tsyntax), "pylibjpeg-libjpeg pylibjpeg-openjpeg")
        raise DataError(
            f"{path} is compressed with {tsyntax.name} ({tsyntax}) and no decoder for it is installed; "
            f"run `pip install pylibjpeg {package}`."
        )
    return tsyntax


def _raise_no_pixel_data(ds: Dataset, path: Path) -> None:
    """Explain why a dataset came back without pixel data: a truncated file, or not an image at all.

    pydicom drops an element that the end of the file cuts short (with only a warning), so a truncated
    image looks like a dataset without Pixel Data. The (7FE0,0010) tag bytes in the file, or a missing
    SOP Class UID (mandatory in every DICOM object), tell the two apart.
    """
    data = path.read_bytes()
    sop = ds.get("SOPClassUID")
    if _PIXEL_DATA_TAG_LE in data or _PIXEL_DATA_TAG_BE in data or not sop:
        raise DataError(
            f"{path} is truncated or corrupt (its Pixel Data, or the header before it, is cut short); "
            "download or copy the file again."
        )
    raise DataError(
        f"{path} has no Pixel Data (it is a {UID(str(sop)).name} object); it is not an image, "
        "so leave it out of the image list."
    )


def _voi_output_range(ds: Dataset) -> tuple[float, float]:
    """The output range of the VOI transform ``apply_voi_lut`` will apply, found by probing it.

    For a VOI LUT the probe is every LUT input; for a window it is two far-out values, which land on the
    window's y_min and y_max (PS3.3 C.11.2.1.2), so both are computed by pydicom itself.
    """
    if ds.get("VOILUTSequence"):
        n_entries, first_map, _ = ds.VOILUTSequence[0].LUTDescriptor
        probe = np.arange(first_map, first_map + (n_entries or 2**16), dtype=np.int64)
    else:
        probe = np.array([-1e15, 1e15])
    with np.errstate(over="ignore"):
        out = apply_voi_lut(probe, ds, prefer_lut=True)
    return float(np.min(out)), float(np.max(out))


def _to_unit_range(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Scale ``arr`` from [lo, hi] to float32 [0, 1], clipping; a constant image maps to zeros."""
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)
    out = arr.astype(np.float32)  # one copy, then in place: a full mammogram is ~50 MB as float32
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def read_dicom(path: Path, *, require_mammography: bool = False) -> tuple[np.ndarray, DicomAttributes]:
    """Read the first frame of a greyscale DICOM image as float32 in [0, 1], bright = dense.

    Args:
        path: The DICOM file.
        require_mammography: If True, refuse any file whose Modality is not "MG".

    Returns:
        ``(pixels, attributes)``: a (Rows, Columns) float32 array and the safe header attributes.

    Raises:
        DataError: If the file is not DICOM, is truncated, has no pixel data, is not greyscale, needs a
            decoder that is not installed, or (with ``require_mammography``) is not a mammogram.
    """
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise DataError(
            f"{path} is not a DICOM file (no 'DICM' marker after the 128-byte preamble); "
            "check that the file is a DICOM image and not corrupt, or download it again."
        ) from None
    except Exception as exc:  # pydicom raises many types on a damaged header
        raise DataError(
            f"{path} could not be read as DICOM ({type(exc).__name__}: {exc}); the file is truncated "
            "or corrupt, download it again."
        ) from exc

    attrs = _attributes(ds)
    if require_mammography and attrs["modality"] != "MG":
        kind = f"a {attrs['modality']} image" if attrs["modality"] else "an image without a Modality"
        raise DataError(
            f"{path} is {kind}, not a mammogram (Modality MG); remove it from the list of mammograms "
            "or read it with require_mammography=False."
        )
    if not any(keyword in ds for keyword in _PIXEL_DATA_KEYWORDS):
        _raise_no_pixel_data(ds, path)
    if attrs["photometric"] not in ("MONOCHROME1", "MONOCHROME2"):
        raise DataError(
            f"{path} has Photometric Interpretation {attrs['photometric']}, not a greyscale "
            "MONOCHROME1/MONOCHROME2 image; only greyscale radiographs can be read."
        )
    tsyntax = _check_decoder(ds, path)

    try:
        if int(ds.get("NumberOfFrames") or 1) > 1:
            logger.info("%s has %s frames; reading only the first", path, ds.NumberOfFrames)
            ds.pixel_array_options(index=0)
        raw = ds.pixel_array
    except Exception as exc:  # decoder plugins raise RuntimeError, ValueError, ... on broken data
        raise DataError(
            f"{path} has pixel data that could not be decoded ({tsyntax.name}: {exc}); the file is "
            "truncated or corrupt, download it again."
        ) from exc
    if raw.ndim != 2:
        raise DataError(f"{path} decodes to shape {raw.shape}, not one greyscale frame; it cannot be read.")

    try:
        values = apply_modality_lut(raw, ds)
        if ds.get("VOILUTSequence") or ("WindowCenter" in ds and "WindowWidth" in ds):
            lo, hi = _voi_output_range(ds)
            values = apply_voi_lut(values, ds, prefer_lut=True)
        else:
            lo, hi = float(values.min()), float(values.max())
    except Exception as exc:  # malformed LUTs, windows of width 0, unsupported VOI functions
        raise DataError(
            f"{path} has a Modality or VOI LUT that pydicom cannot apply ({exc}); the header is corrupt "
            "or unusual, convert the file with a DICOM tool before use."
        ) from exc
    pixels = _to_unit_range(values, lo, hi)
    del raw, values

    if attrs["photometric"] == "MONOCHROME1" or _text(ds, "PresentationLUTShape") == "INVERSE":
        np.subtract(np.float32(1.0), pixels, out=pixels)
    return pixels, attrs
