"""mini-MIAS (Suckling et al. 1994): 322 MLO films of 161 women, 1024 x 1024 PGM, truth in ``Info.txt``.

Manifest rules (see ``data_manifests/README.md``):

- ``mdbNNN`` is one film; films come in pairs per woman, so ``patient_id = "mias-%03d" % ((NNN + 1) // 2)``.
  Even numbers are left breasts, odd numbers right ones. Every mini-MIAS film is an MLO view.
- An image is malignant if any finding is ``M``, abnormal if any finding is not ``NORM``.
- ``density`` stays empty: MIAS's background tissue (F fatty, G fatty-glandular, D dense-glandular) is not
  the BI-RADS A-D scale, so no mapping is invented; the letter is kept first in ``source_label``.
- Info.txt measures y from the bottom-left corner; lesions are stored with the top-left origin,
  ``cy = 1023 - y``. Four abnormal rows have no coordinates (mdb059, mdb216, mdb233, mdb245): shape "none".

Usage: ``python -m mammo_utils.prepare.sources.mias --write-manifest data_manifests/mias`` regenerates the committed
manifest; ``fetch`` downloads/verifies/extracts the public archive.
"""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mammo_utils.errors import DataError
from mammo_utils.prepare import manifest
from mammo_utils.prepare.sources import committed
from mammo_utils.prepare.sources.fetch import ExtractReport, download, extract_verified, read_sha256sums
from mammo_utils.prepare.split import assign_splits
from mammo_utils.runs.files import atomic_write_json

if TYPE_CHECKING:
    from mammo_utils.config import Config

log = logging.getLogger(__name__)

NAME = "mias"
SIZE_PX = 1024
URL = "http://peipa.essex.ac.uk/pix/mias/all-mias.tar.gz"
ARCHIVE_NAME = "all-mias.tar.gz"
REPO_MANIFEST_DIR = Path(__file__).resolve().parents[3] / "data_manifests" / NAME  # the repository
CHECKSUMS = REPO_MANIFEST_DIR / "SHA256SUMS"
REPORT_NAME = "fetch_report.json"

KINDS = {"CALC": "calcification", "CIRC": "mass", "SPIC": "mass", "MISC": "mass", "ARCH": "distortion",
         "ASYM": "asymmetry"}
TISSUES = ("F", "G", "D")
SEVERITIES = ("B", "M")
_ROW = re.compile(r"^mdb\d{3}\s")


def how_to_get(data_dir: Path | str) -> str:
    return (f"Download mini-MIAS with `python -m mammo_utils prepare --dataset mias --from {URL}` "
            f"(or pass a local all-mias.tar.gz instead of the URL); it is verified and extracted into "
            f"{Path(data_dir) / NAME}.")


def parse_info(path: Path) -> pd.DataFrame:
    """Parse ``Info.txt`` into one row per finding.

    Handles the README header, CRLF line ends, trailing spaces and the stray ``*NOTE 3*`` tokens.

    Returns:
        Columns ``refnum, tissue, cls, severity, x, y, r, line`` (x, y, r are NaN when absent).

    Raises:
        DataError: a missing file, an unknown tissue/class/severity, or malformed coordinates, naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"No Info.txt at {path}. {how_to_get(path.parent.parent)}")
    rows = []
    text = path.read_text(encoding="ascii", errors="replace")
    for n, line in enumerate(text.splitlines(), 1):
        if not _ROW.match(line):
            continue
        tokens = [t for t in line.split() if not (t.startswith("*") or t.endswith("*"))]
        where = f"{path}, line {n} ({line.strip()!r})"
        if len(tokens) < 3 or len(tokens) not in (3, 4, 7):
            raise DataError(f"{where}: expected REFNUM TISSUE CLASS [SEVERITY [X Y RADIUS]].")
        ref, tissue, cls = tokens[:3]
        sev = tokens[3] if len(tokens) > 3 else ""
        if tissue not in TISSUES:
            raise DataError(f"{where}: unknown background tissue {tissue!r}; expected one of {TISSUES}.")
        if cls != "NORM" and cls not in KINDS:
            raise DataError(f"{where}: unknown class {cls!r}; expected NORM or one of {sorted(KINDS)}.")
        if (cls == "NORM") != (sev == "") or (sev and sev not in SEVERITIES):
            raise DataError(f"{where}: severity {sev!r} does not fit class {cls} (B or M for findings only).")
        try:
            x, y, r = (float(t) for t in tokens[4:7]) if len(tokens) == 7 else (np.nan,) * 3
        except ValueError:
            raise DataError(f"{where}: X Y RADIUS must be numbers.") from None
        rows.append(dict(refnum=ref, tissue=tissue, cls=cls, severity=sev, x=x, y=y, r=r, line=n))
    if not rows:
        raise DataError(f"{path} holds no mdbNNN rows; is it the mini-MIAS Info.txt?")
    return pd.DataFrame(rows)


def _images(info: pd.DataFrame) -> pd.DataFrame:
    out = []
    for ref, g in info.groupby("refnum", sort=True):
        num = int(ref[3:])
        if g["tissue"].nunique() > 1:
            raise DataError(f"Info.txt lines {g['line'].tolist()}: {ref} has two background tissues.")
        findings = [f"{c} {s}".strip() for c, s in zip(g["cls"], g["severity"], strict=True)]
        out.append(dict(
            image_id=ref, patient_id=f"mias-{(num + 1) // 2:03d}", dataset=NAME, path=f"{ref}.pgm",
            laterality="L" if num % 2 == 0 else "R", view="MLO", density="",
            abnormal=int((g["cls"] != "NORM").any()), malignant=int((g["severity"] == "M").any()),
            birads="", source_label=f"{g['tissue'].iloc[0]} " + ";".join(findings), split="", fold=-1,
            width=SIZE_PX, height=SIZE_PX,
        ))
    return pd.DataFrame(out, columns=manifest.IMAGE_COLUMNS)


def _lesions(info: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for ref, g in info[info["cls"] != "NORM"].groupby("refnum", sort=True):
        for k, f in enumerate(g.itertuples(), 1):
            row = dict(image_id=ref, lesion_id=f"{ref}-{k}", kind=KINDS[f.cls], severity=f.severity,
                       shape="none", cx=np.nan, cy=np.nan, r=np.nan, x0=np.nan, y0=np.nan, x1=np.nan,
                       y1=np.nan, mask_path="")
            if not np.isnan(f.x):
                cx, cy, r = f.x, SIZE_PX - 1 - f.y, f.r  # bottom-left origin -> top-left (row = 1023 - y)
                row.update(shape="circle", cx=cx, cy=cy, r=r, x0=max(cx - r, 0), y0=max(cy - r, 0),
                           x1=min(cx + r, SIZE_PX - 1), y1=min(cy + r, SIZE_PX - 1))
            rows.append(row)
    return pd.DataFrame(rows, columns=manifest.LESION_COLUMNS)


def build_manifest(root: Path, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build ``(images, lesions)`` from ``root/Info.txt``; patient-level stratified split and folds.

    Splits are assigned over all 322 films first, so they do not depend on which files are present. When
    ``root`` holds images, rows whose file is missing (e.g. skipped by ``fetch(keep_going=True)``) are
    dropped with a warning naming each one.
    """
    root = Path(root)
    info = parse_info(root / "Info.txt")
    images = assign_splits(
        _images(info), val_fraction=cfg.split.val_fraction, test_fraction=cfg.split.test_fraction,
        n_folds=cfg.split.n_folds, seed=cfg.seed,
    )
    lesions = _lesions(info)
    present = images["path"].map(lambda p: (root / p).is_file())
    if present.any() and not present.all():
        for image_id in images.loc[~present, "image_id"]:
            log.warning("mias: %s.pgm is missing under %s; left out of the manifest", image_id, root)
        images = images[present].reset_index(drop=True)
        lesions = lesions[lesions["image_id"].isin(images["image_id"])].reset_index(drop=True)
    manifest.validate(images, lesions, source=f"{root / 'Info.txt'}")
    return images, lesions


def fetch(source: str, data_dir: Path, *, keep_going: bool = False, expect_all: bool = True) -> Path:
    """Get mini-MIAS from a local archive or an http(s) URL into ``<data_dir>/mias``, verified.

    Every ``mdbNNN.pgm`` and ``Info.txt`` is found by name anywhere in the archive and checked against
    ``data_manifests/mias/SHA256SUMS`` (committed in the repository). Files already extracted with the right
    checksum are kept. Every skipped file is logged with its reason and listed in ``fetch_report.json``.

    Args:
        source: path of ``all-mias.tar.gz`` (or a re-packed tar/zip), or an ``http(s)://`` / ``file://`` URL.
        data_dir: the data directory; the download goes to ``<data_dir>/downloads``.
        keep_going: skip tampered, unsafe or missing files and list them instead of raising.
        expect_all: require all 322 images (False accepts a partial archive, e.g. for tests).

    Returns:
        The dataset folder ``<data_dir>/mias``.
    """
    data_dir = Path(data_dir)
    scheme = urllib.parse.urlparse(str(source)).scheme
    if scheme in ("http", "https", "file"):
        archive = download(str(source), data_dir / "downloads")
    else:
        archive = Path(source).expanduser()
        if not archive.is_file():
            raise DataError(f"No archive at {archive}. {how_to_get(data_dir)}")
    target = data_dir / NAME
    report: ExtractReport = extract_verified(
        archive, read_sha256sums(CHECKSUMS), target, keep_going=keep_going, expect_all=expect_all
    )
    atomic_write_json(target / REPORT_NAME, {"source": str(source), "written": len(report.written),
                                             "kept": len(report.kept), "skipped": report.skipped})
    return target


def _missing_images(root: Path) -> list[str]:
    info = parse_info(root / "Info.txt")
    missing = [f"{r}.pgm" for r in sorted(info["refnum"].unique()) if not (root / f"{r}.pgm").is_file()]
    report = root / REPORT_NAME
    if missing and report.is_file():  # files that fetch(keep_going=True) skipped, on purpose
        skipped = {Path(name).name for name, _ in json.loads(report.read_text())["skipped"]}
        tolerated = [m for m in missing if m in skipped]
        for m in tolerated:
            log.warning("mias: %s was skipped when fetching (see %s)", m, report)
        missing = [m for m in missing if m not in skipped]
    return missing


def locate(cfg: Config) -> Path:
    """The mini-MIAS folder ready to read; extracts ``<sources_dir>/mias/all-mias.tar.gz`` when needed."""
    root = Path(cfg.data_dir) / NAME
    problem = ""
    if not (root / "Info.txt").is_file():
        problem = f"{root / 'Info.txt'} does not exist"
    else:
        missing = _missing_images(root)
        if not missing:
            return root
        problem = f"{len(missing)} images are missing from {root} ({', '.join(missing[:5])}…)"
    if cfg.sources_dir:
        for archive in (Path(cfg.sources_dir) / NAME / ARCHIVE_NAME, Path(cfg.sources_dir) / ARCHIVE_NAME):
            if archive.is_file():
                log.info("mias: %s; extracting %s", problem, archive)
                return fetch(str(archive), Path(cfg.data_dir))
    raise DataError(f"mini-MIAS is not ready: {problem}. {how_to_get(cfg.data_dir)}")


def write_manifest(folder: Path, source_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the committed manifest (seed 0, default split fractions, 5 folds) into ``folder``."""
    return committed.write_manifest(build_manifest, folder, source_root)


def main(argv: list[str] | None = None) -> None:
    committed.main(build_manifest, NAME, __doc__.splitlines()[0], "folder holding Info.txt", argv)


if __name__ == "__main__":
    main()
