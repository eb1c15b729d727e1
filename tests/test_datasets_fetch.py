"""`prepare --dataset mias`: download over loopback HTTP, verify every image, extract safely."""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from mammo_utils.config import Config
from mammo_utils.errors import DataError
from mammo_utils.prepare import manifest
from mammo_utils.prepare.sources import mias
from mammo_utils.prepare.sources.fetch import read_sha256sums, sha256_file

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MAMMO_SOURCES_DIR") or REPO.parent / "shared" / "datasets") / "mias"
ARCHIVE = SHARED / "all-mias.tar.gz"
pytestmark = pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"no shared MIAS archive at {ARCHIVE}")
WANTED = ["Info.txt"] + [f"mdb{n:03d}.pgm" for n in range(1, 7)]


@pytest.fixture(scope="module")
def members() -> dict[str, bytes]:
    """Info.txt and the first six images, read from the shared archive (they are at its start)."""
    found: dict[str, bytes] = {}
    with tarfile.open(ARCHIVE, "r:gz") as tar:
        for m in tar:
            name = Path(m.name).name
            if name in WANTED:
                found[name] = tar.extractfile(m).read()
            if len(found) == len(WANTED):
                return found
    raise AssertionError("members not found")


def make_tar(path: Path, files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


def nested(files: dict[str, bytes]) -> dict[str, bytes]:
    """Another layout than ours: the finder must not assume ``all-mias/``."""
    return {(f"MIAS/docs/{n}" if n.endswith(".txt") else f"MIAS/images/pgm/{n}"): d for n, d in files.items()}


@pytest.fixture
def server(tmp_path, monkeypatch):
    """An HTTP server on 127.0.0.1 serving ``tmp_path / "www"``; yields its base URL."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_verify_extract_by_name(server, members, tmp_path):
    www, url = server
    make_tar(www / "all-mias.tar.gz", nested(members))
    data_dir = tmp_path / "data"
    root = mias.fetch(f"{url}/all-mias.tar.gz", data_dir, expect_all=False)
    assert root == data_dir / "mias"
    sums = read_sha256sums(mias.CHECKSUMS)
    for name in WANTED:
        assert sha256_file(root / name) == sums[name]
    assert (data_dir / "downloads" / "all-mias.tar.gz").is_file()
    assert not list((data_dir / "downloads").glob("*.part"))
    assert json.loads((root / mias.REPORT_NAME).read_text())["skipped"] == []
    # a second run keeps the good files as they are
    mtimes = {n: (root / n).stat().st_mtime_ns for n in WANTED}
    mias.fetch(f"{url}/all-mias.tar.gz", data_dir, expect_all=False)
    assert mtimes == {n: (root / n).stat().st_mtime_ns for n in WANTED}


def test_missing_images_are_listed_when_all_are_expected(members, tmp_path):
    archive = make_tar(tmp_path / "small.tar.gz", members)
    with pytest.raises(DataError, match=r"316 bad or missing files: mdb007\.pgm: not found in the archive"):
        mias.fetch(str(archive), tmp_path / "data")


def test_corrupted_archive_is_a_clear_error(server, members, tmp_path):
    www, url = server
    data = make_tar(tmp_path / "good.tar.gz", members).read_bytes()
    (www / "all-mias.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt/truncated.*Download it again"):
        mias.fetch(f"{url}/all-mias.tar.gz", tmp_path / "data", expect_all=False)
    (www / "junk.tar.gz").write_bytes(b"this is not an archive")
    with pytest.raises(DataError, match="not a readable archive"):
        mias.fetch(f"{url}/junk.tar.gz", tmp_path / "data", expect_all=False)
    with pytest.raises(DataError, match="Could not download"):
        mias.fetch(f"{url}/missing.tar.gz", tmp_path / "data", expect_all=False)


def test_tampered_image_is_named_or_skipped_and_listed(server, members, tmp_path):
    www, url = server
    bad = dict(members)
    pixels = bytearray(bad["mdb003.pgm"])
    pixels[500_000] ^= 0xFF  # one pixel changed
    bad["mdb003.pgm"] = bytes(pixels)
    make_tar(www / "all-mias.tar.gz", nested(bad))
    data_dir = tmp_path / "data"
    with pytest.raises(DataError, match=r"mdb003\.pgm: sha256 .* does not match"):
        mias.fetch(f"{url}/all-mias.tar.gz", data_dir, expect_all=False)
    root = mias.fetch(f"{url}/all-mias.tar.gz", data_dir, keep_going=True, expect_all=False)
    assert not (root / "mdb003.pgm").exists() and (root / "mdb004.pgm").is_file()
    skipped = json.loads((root / mias.REPORT_NAME).read_text())["skipped"]
    assert [Path(name).name for name, _ in skipped] == ["mdb003.pgm"] and "does not match" in skipped[0][1]


def test_escaping_members_and_links_are_rejected(members, tmp_path):
    evil = {"../mdb001.pgm": members["mdb001.pgm"], "/tmp/mdb002.pgm": members["mdb002.pgm"]}
    link = tarfile.TarInfo("all-mias/mdb004.pgm")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    device = tarfile.TarInfo("all-mias/mdb005.pgm")
    device.type = tarfile.CHRTYPE
    archive = make_tar(tmp_path / "evil.tar.gz", {**evil, "all-mias/mdb003.pgm": members["mdb003.pgm"]},
                       [link, device])
    data_dir = tmp_path / "deep" / "data"
    with pytest.raises(DataError, match=r"\.\./mdb001\.pgm: path escapes"):
        mias.fetch(str(archive), data_dir, expect_all=False)
    root = mias.fetch(str(archive), data_dir, keep_going=True, expect_all=False)
    reasons = dict(json.loads((root / mias.REPORT_NAME).read_text())["skipped"])
    assert set(reasons) == {"../mdb001.pgm", "/tmp/mdb002.pgm", "all-mias/mdb004.pgm", "all-mias/mdb005.pgm"}
    assert "link" in reasons["all-mias/mdb004.pgm"] and "device" in reasons["all-mias/mdb005.pgm"]
    assert sorted(p.name for p in root.glob("*.pgm")) == ["mdb003.pgm"]
    assert not (tmp_path / "deep" / "mdb001.pgm").exists()


def test_zip_archives_work_too(members, tmp_path):
    archive = tmp_path / "mias.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in nested(members).items():
            zf.writestr(name, data)
    root = mias.fetch(str(archive), tmp_path / "data", expect_all=False)
    assert sorted(p.name for p in root.iterdir() if p.suffix in (".pgm", ".txt")) == sorted(WANTED)


def test_locate_extracts_the_sources_archive(tmp_path):
    """The CI path: MAMMO_SOURCES_DIR holds mias/all-mias.tar.gz, the data dir is empty and writable."""
    cfg = Config(data_dir=str(tmp_path / "data"), sources_dir=str(SHARED.parent))
    root = mias.locate(cfg)
    images, lesions = mias.build_manifest(root, cfg)
    manifest.validate(images, lesions, root=root)
    assert len(images) == 322
    assert mias.locate(cfg) == root  # ready now: no second extraction
