"""Tests for mammo_utils.prepare.io: every shared DICOM sample, PGM/PNG round trips, and every error path.

The real files come from ``$MAMMO_SOURCES_DIR`` (default ``<repo>/../shared/datasets``); tests that need
them are skipped with a reason when that folder is absent. Nothing is downloaded.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import JPEG2000Lossless

from mammo_utils.errors import DataError
from mammo_utils.prepare.io import MammoImage, read_image

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCES_DIR = Path(os.environ.get("MAMMO_SOURCES_DIR", REPO_ROOT.parent / "shared" / "datasets"))
SAMPLES_DIR = SOURCES_DIR / "dicom-samples"
CBIS_FULL = "MG_CBIS-DDSM_Mass-Test_P_00820_LEFT_CC_full_RLE.dcm"


def _image_samples() -> list[str]:
    """Names of the DICOM samples that carry pixel data (decided from the header, not hard-coded)."""
    if not SAMPLES_DIR.is_dir():
        return []
    names = []
    for path in sorted(SAMPLES_DIR.glob("*.dcm")):
        if "PixelData" in pydicom.dcmread(path, defer_size="1 KB"):
            names.append(path.name)
    return names


IMAGE_SAMPLES = _image_samples()


def sample(name: str) -> Path:
    """Path of one shared DICOM sample; skips the test when the shared data is not there."""
    path = SAMPLES_DIR / name
    if not path.is_file():
        pytest.skip(f"shared DICOM sample {path} not found (set MAMMO_SOURCES_DIR to the datasets folder)")
    return path


def raw_pixels(path: Path) -> np.ndarray:
    """The stored values as pydicom decodes them, before any LUT."""
    return pydicom.dcmread(path).pixel_array.astype(np.float64)


def assert_data_error(path: Path, *fragments: str, **kwargs: bool) -> None:
    """Reading ``path`` raises DataError whose message names the file and contains ``fragments``."""
    with pytest.raises(DataError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message


def write_pgm(path: Path, raw: np.ndarray, maxval: int) -> None:
    """Write a binary PGM with a GIMP-style comment line, as mini-MIAS has."""
    dtype = ">u2" if maxval > 255 else "u1"
    header = f"P5\n# CREATOR: GIMP PNM Filter Version 1.1\n{raw.shape[1]} {raw.shape[0]}\n{maxval}\n"
    path.write_bytes(header.encode("ascii") + raw.astype(dtype).tobytes())


# --- every DICOM sample -------------------------------------------------------------------------------


def test_shared_samples_present() -> None:
    if not SAMPLES_DIR.is_dir():
        pytest.skip(f"{SAMPLES_DIR} not found (set MAMMO_SOURCES_DIR to the datasets folder)")
    assert len(IMAGE_SAMPLES) >= 19


@pytest.mark.parametrize("name", IMAGE_SAMPLES)
def test_sample_reads_to_unit_float(name: str) -> None:
    path = sample(name)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    image = read_image(path)
    assert isinstance(image, MammoImage)
    assert image.pixels.dtype == np.float32
    assert image.pixels.shape == (header.Rows, header.Columns)
    assert 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0
    assert image.pixels.std() > 0.01, "image came out (almost) constant"
    assert image.bits_stored == header.BitsStored
    assert image.modality == header.Modality


@pytest.mark.parametrize("name", IMAGE_SAMPLES)
def test_bright_means_dense(name: str) -> None:
    """MONOCHROME1 (and PLUT INVERSE) images are inverted exactly once; MONOCHROME2 ones are not."""
    path = sample(name)
    image = read_image(path)
    corr = np.corrcoef(raw_pixels(path).ravel(), image.pixels.ravel())[0, 1]
    if image.photometric == "MONOCHROME1":
        assert corr < -0.9
    else:
        assert image.photometric == "MONOCHROME2"
        assert corr > 0.9


def test_monochrome1_with_inverse_plut_is_inverted_once() -> None:
    """dx_image.dcm: MONOCHROME1 plus Presentation LUT Shape INVERSE, both saying 'low value = white'."""
    path = sample("dx_image.dcm")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert header.PhotometricInterpretation == "MONOCHROME1" and header.PresentationLUTShape == "INVERSE"
    image = read_image(path)
    raw = raw_pixels(path)
    # Rescale 1/0 and WC 128 / WW 256 over 8 bits: the window is linear over the whole stored range.
    assert np.allclose(image.pixels, 1.0 - raw / 255.0, atol=0.01)
    assert image.laterality == "L"
    assert image.presentation_intent == "FOR PRESENTATION"


def test_cbis_ddsm_full_mammogram() -> None:
    path = sample(CBIS_FULL)
    image = read_image(path, require_mammography=True)
    assert image.pixels.shape == (4736, 2624)
    # CBIS-DDSM has no ImageLaterality/ViewPosition: Laterality and Patient Orientation carry them.
    assert (image.laterality, image.view, image.modality) == ("L", "CC", "MG")
    assert image.photometric == "MONOCHROME2" and image.presentation_intent is None
    assert image.bits_stored == 16
    # A left CC breast lies against the left edge; the film corners are background (some carry a
    # bright film border, hence medians rather than means).
    pixels = image.pixels
    height = pixels.shape[0]
    breast = pixels[height // 2 - 300 : height // 2 + 300, :600]
    corners = [pixels[:200, :200], pixels[:200, -200:], pixels[-200:, :200], pixels[-200:, -200:]]
    assert np.median(breast) > max(np.median(corner) for corner in corners) + 0.3


def test_no_identifiers_in_result() -> None:
    path = sample(CBIS_FULL)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    image = read_image(path)
    fields = [image.laterality, image.view, image.photometric, image.presentation_intent, image.modality]
    for secret in (str(header.PatientID), str(header.PatientName)):
        assert all(secret not in str(field) for field in fields)


def test_jpeg2000_lossy_matches_lossless() -> None:
    lossless = read_image(sample("RG3_J2KR.dcm")).pixels
    lossy = read_image(sample("RG3_J2KI.dcm")).pixels
    difference = np.abs(lossless - lossy)
    # Stored values differ by at most 9 of 1024 levels; the window is 1024 wide.
    assert difference.mean() < 0.005
    assert difference.max() < 0.02


@pytest.mark.parametrize("name", ["CT_small.dcm", "CT1_JLSN.dcm"])
def test_modality_lut_keeps_order(name: str) -> None:
    """Rescale slope/intercept is monotone, so pixel order follows stored-value order exactly."""
    path = sample(name)
    raw = raw_pixels(path).ravel()
    pixels = read_image(path).pixels.ravel()
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(pixels[order]) >= 0)
    # No window in these files: min-max of the Hounsfield values, i.e. linear in the raw values.
    assert np.allclose(pixels, (raw - raw.min()) / (raw.max() - raw.min()), atol=1e-5)


def test_window_is_applied() -> None:
    """MR_small has WC 600 / WW 1600: values below the window's bottom map to the output minimum."""
    path = sample("MR_small_RLE.dcm")
    raw = raw_pixels(path)
    pixels = read_image(path).pixels
    assert np.all(pixels[raw >= 1400] == pytest.approx(1.0))
    inside = (raw > -199) & (raw < 1399)
    assert np.corrcoef(raw[inside], pixels[inside])[0, 1] > 0.999


def test_dicom_without_extension(tmp_path: Path) -> None:
    copy = tmp_path / "image"
    copy.write_bytes(sample("CT_small.dcm").read_bytes())
    assert read_image(copy).modality == "CT"


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:End of file")
@pytest.mark.parametrize(
    ("name", "keep"), [(CBIS_FULL, 0.5), ("CT_small.dcm", 0.5), ("RG3_J2KR.dcm", 0.5), ("CT_small.dcm", 0.01)]
)
def test_truncated_dicom(tmp_path: Path, name: str, keep: float) -> None:
    data = sample(name).read_bytes()
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: int(len(data) * keep)])
    assert_data_error(truncated, "truncated")


def test_random_bytes_dicom(tmp_path: Path) -> None:
    path = tmp_path / "noise.dcm"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert_data_error(path, "not a DICOM file")


def test_dicom_without_pixel_data() -> None:
    assert_data_error(sample("test-SR.dcm"), "no Pixel Data", "Comprehensive SR")


def test_require_mammography_refuses_ct() -> None:
    path = sample("CT_small.dcm")
    assert_data_error(path, "is a CT image, not a mammogram (Modality MG)", require_mammography=True)


def test_missing_decoder_names_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(get_decoder(JPEG2000Lossless), "_available", {})
    assert_data_error(sample("RG3_J2KR.dcm"), "JPEG 2000", "pip install pylibjpeg pylibjpeg-openjpeg")


def test_missing_file(tmp_path: Path) -> None:
    assert_data_error(tmp_path / "mdb999.pgm", "does not exist")


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "scan.jpg"
    path.write_bytes(b"\xff\xd8\xff")
    assert_data_error(path, "unsupported extension", ".jpg")


@pytest.mark.parametrize(
    "content",
    [
        b"P2\n2 2\n255\n0 1 2 3\n",
        b"P5\n# only a comment\n",
        b"P5\n2 two\n255\n\x00\x00",
        b"P5\n2 2\n0\n" + b"\x00" * 4,
    ],
    ids=["ascii-pgm", "no-size", "bad-height", "zero-maxval"],
)
def test_pgm_bad_header(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pgm"
    path.write_bytes(content)
    assert_data_error(path, "PGM")


def test_pgm_truncated(tmp_path: Path) -> None:
    path = tmp_path / "short.pgm"
    write_pgm(path, np.zeros((64, 64), dtype=np.uint8), 255)
    path.write_bytes(path.read_bytes()[:-100])
    assert_data_error(path, "truncated")


def test_png_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    assert_data_error(path, "PNG")


# --- PGM and PNG round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize(("maxval", "bits"), [(255, 8), (4095, 12), (65535, 16)])
def test_pgm_round_trip(tmp_path: Path, maxval: int, bits: int) -> None:
    raw = np.random.default_rng(1).integers(0, maxval + 1, (37, 53))
    path = tmp_path / "image.pgm"
    write_pgm(path, raw, maxval)
    image = read_image(path)
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (37, 53)
    assert np.array_equal(np.rint(image.pixels.astype(np.float64) * maxval), raw)
    assert image.bits_stored == bits
    assert image.photometric is None and image.modality is None and image.laterality is None


def test_mias_pgm_from_archive(tmp_path: Path) -> None:
    archive = SOURCES_DIR / "mias" / "all-mias.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{archive} not found (set MAMMO_SOURCES_DIR to the datasets folder)")
    with tarfile.open(archive, "r:gz") as tar:
        # Find the member by name, not by folder layout; stop reading the archive as soon as it is found.
        member = next(m for m in tar if m.isfile() and Path(m.name).name == "mdb001.pgm")
        extracted = tar.extractfile(member)
        assert extracted is not None
        data = extracted.read()
    path = tmp_path / "mdb001.pgm"
    path.write_bytes(data)
    image = read_image(path)
    assert image.pixels.shape == (1024, 1024)
    assert image.bits_stored == 8
    expected = np.frombuffer(data[-1024 * 1024 :], dtype=np.uint8).mean() / 255.0
    assert image.pixels.mean(dtype=np.float64) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("dtype", "maxval", "bits"), [(np.uint8, 255, 8), (np.uint16, 65535, 16)])
def test_png_round_trip(tmp_path: Path, dtype: type, maxval: int, bits: int) -> None:
    raw = np.random.default_rng(2).integers(0, maxval + 1, (40, 30)).astype(dtype)
    path = tmp_path / "image.png"
    Image.fromarray(raw).save(path)
    image = read_image(path)
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (40, 30)
    assert np.array_equal(np.rint(image.pixels.astype(np.float64) * maxval).astype(dtype), raw)
    assert image.bits_stored == bits


def test_rgb_png_becomes_grey(tmp_path: Path) -> None:
    grey = np.random.default_rng(3).integers(0, 256, (20, 24), dtype=np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(path)
    image = read_image(path)
    assert image.pixels.shape == (20, 24)
    assert np.allclose(image.pixels * 255.0, grey, atol=1.0)
