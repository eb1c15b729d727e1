"""Download, verify and safely extract a dataset archive.

The archive's own bytes are not trusted: a user's download may be re-packed, so every wanted file is found
*by name* wherever it lies in the archive and checked against a sha256 committed in this repository. Nothing
is extracted by its member path, so no member can write outside the target folder; members that try to
(absolute paths, ``..``, links, devices) are still reported, because an archive holding them is suspect.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from mammo_utils.errors import DataError
from mammo_utils.runs.files import atomic_write_bytes

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20


@dataclass
class ExtractReport:
    """What :func:`extract_verified` did, file by file.

    Attributes:
        written: names written (new, or replacing a bad copy).
        kept: names already present with the right checksum, left untouched.
        skipped: ``(name, reason)`` for every bad, unsafe or missing file.
    """

    written: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{name}: {reason}" for name, reason in self.skipped]


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


def read_sha256sums(path: Path) -> dict[str, str]:
    """Read a ``sha256sum`` file into ``{file name (no folders): hex digest}``."""
    sums: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DataError(f"{path}, line {n}: not a sha256sum line: {line!r}.")
        sums[PurePosixPath(parts[1].lstrip("*").strip()).name] = parts[0].lower()
    return sums


def download(url: str, folder: Path) -> Path:
    """Download ``url`` into ``folder`` (temp file, then atomic rename) with a progress bar.

    Returns:
        The downloaded file, named after the last part of the URL's path.
    """
    from tqdm.auto import tqdm

    name = PurePosixPath(urllib.parse.urlparse(url).path).name or "download"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / name
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    log.info("Downloading %s to %s", url, dest)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=name, leave=False) as bar:
                for chunk in iter(lambda: resp.read(CHUNK_BYTES), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
            if total is not None and out.tell() != total:
                raise DataError(f"Download of {url} stopped after {out.tell()} of {total} bytes. Try again.")
        os.replace(tmp, dest)
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise DataError(f"Could not download {url}: {exc}. Check the address, or download it yourself "
                        f"and pass the file instead.") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def _unsafe_reason(name: str) -> str | None:
    """Why a member name could escape the target folder, or None when it is harmless."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or (p.parts and ":" in p.parts[0]):
        return "absolute path (would be written outside the target folder)"
    if ".." in p.parts:
        return "path escapes the target folder ('..')"
    return None


def _iter_tar(archive: Path) -> Iterator[tuple[str, str | None, bytes | None]]:
    with tarfile.open(archive, mode="r:*") as tar:
        for m in tar:
            if m.isdir():
                continue
            reason = _unsafe_reason(m.name)
            if reason is None and (m.issym() or m.islnk()):
                reason = f"link to {m.linkname!r} (links are never extracted)"
            elif reason is None and not m.isfile():
                reason = "device, fifo or other special file (never extracted)"
            data = None
            if reason is None:
                fh = tar.extractfile(m)
                data = fh.read() if fh is not None else b""
            yield m.name, reason, data


def _iter_zip(archive: Path) -> Iterator[tuple[str, str | None, bytes | None]]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            reason = _unsafe_reason(info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip tool stored no Unix type
            if reason is None and kind == stat.S_IFLNK:
                reason = "link (links are never extracted)"
            elif reason is None and kind not in (0, stat.S_IFREG):
                reason = "device, fifo or other special file (never extracted)"
            yield info.filename, reason, (zf.read(info) if reason is None else None)


def iter_members(archive: Path) -> Iterator[tuple[str, str | None, bytes | None]]:
    """Yield ``(member name, reason it is unsafe or None, bytes or None)`` for each file in an archive.

    Raises:
        DataError: the file is not a tar or zip archive, or is corrupt or truncated.
    """
    archive = Path(archive)
    is_zip = zipfile.is_zipfile(archive)
    try:
        yield from (_iter_zip(archive) if is_zip else _iter_tar(archive))
    except (tarfile.TarError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DataError(
            f"{archive} is not a readable archive or is corrupt/truncated ({type(exc).__name__}: {exc}). "
            f"Download it again."
        ) from None


def extract_verified(
    archive: Path,
    checksums: dict[str, str],
    target: Path,
    *,
    keep_going: bool = False,
    expect_all: bool = True,
) -> ExtractReport:
    """Extract the files named in ``checksums`` from ``archive`` into ``target``, verified, by name.

    A file already in ``target`` with the right checksum is kept as it is (not re-written). Each file that
    matches is written atomically. Every problem is collected first and then reported together.

    Args:
        archive: a tar (any compression) or zip file.
        checksums: ``{file name: sha256}``; the folder a member sits in does not matter.
        target: the folder the files are written to, flat.
        keep_going: skip bad files (wrong checksum, unsafe members, missing files) and list them,
            instead of raising.
        expect_all: a wanted file that is neither in the archive nor already in ``target`` is a problem.

    Returns:
        The :class:`ExtractReport`.

    Raises:
        DataError: the archive is unreadable, or (unless ``keep_going``) any file is bad, naming each one.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    report = ExtractReport()
    done: set[str] = set()
    bad: set[str] = set()
    for name in sorted(checksums):  # good files from an earlier run are kept, not re-written
        if (target / name).is_file() and sha256_file(target / name) == checksums[name]:
            report.kept.append(name)
            done.add(name)
    for member, unsafe, data in iter_members(archive):
        base = PurePosixPath(member.replace("\\", "/")).name
        if unsafe is not None:
            report.skipped.append((member, unsafe))
            continue
        if base not in checksums or base in done:
            continue
        digest = sha256_bytes(data or b"")
        if digest != checksums[base]:
            bad.add(base)
            report.skipped.append((member, f"sha256 {digest[:12]}… does not match the committed "
                                           f"{checksums[base][:12]}… (tampered or damaged)"))
            continue
        atomic_write_bytes(target / base, data or b"")
        report.written.append(base)
        done.add(base)
    if expect_all:
        for name in sorted(set(checksums) - done - bad):
            report.skipped.append((name, "not found in the archive"))
    for line in report.lines():
        log.warning("Skipped %s", line)
    log.info("%s: %d files written, %d already present, %d skipped", Path(archive).name,
             len(report.written), len(report.kept), len(report.skipped))
    if report.skipped and not keep_going:
        shown = "; ".join(report.lines()[:10])
        more = f"; and {len(report.skipped) - 10} more" if len(report.skipped) > 10 else ""
        raise DataError(f"{archive}: {len(report.skipped)} bad or missing files: {shown}{more}. "
                        f"Download the archive again, or pass --keep-going to skip them.")
    return report


def default_sources_dir() -> Path:
    """``MAMMO_SOURCES_DIR``, else ``<repository>/../shared/datasets`` (where CI keeps the shared copy)."""
    env = os.environ.get("MAMMO_SOURCES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[4] / "shared" / "datasets"
