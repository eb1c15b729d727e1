"""The preprocessed cache: atomic, resumable, verifiable, and honest about files it had to skip."""

import os

import numpy as np
import pandas as pd
import pytest

from mammo_utils.errors import DataError
from mammo_utils.prepare.cache import cache_images, cache_key, verify_cache
from mammo_utils.prepare.manifest import IMAGE_COLUMNS
from mammo_utils.prepare.synthetic import generate_image
from mammo_utils.runs.files import atomic_write_bytes


def _dataset(tmp_path, n=4):
    from PIL import Image

    root = tmp_path / "ds"
    root.mkdir()
    rows = []
    for i in range(n):
        img = generate_image(np.random.default_rng(i), 96, "CC", "LR"[i % 2], "B", None)
        Image.fromarray((img.pixels * 255).astype(np.uint8)).save(root / f"im{i}.png")
        rows.append(dict(image_id=f"im{i}", patient_id=f"p{i}", dataset="t", path=f"im{i}.png", laterality="L",
                         view="CC", density="", abnormal=0, malignant=0, birads="", source_label="", split="train",
                         fold=0, width=96, height=96))
    return root, pd.DataFrame(rows, columns=IMAGE_COLUMNS)


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "x.bin"
    atomic_write_bytes(path, b"old")

    def disk_full(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", disk_full)  # the write dies before the file is complete
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]  # no temporary file left behind


def test_cache_is_resumable_and_verifiable(tmp_path):
    root, images = _dataset(tmp_path)
    index, skipped = cache_images(images, pd.DataFrame(), root, tmp_path / "cache", 32, workers=1)
    assert not skipped and len(index) == 4 and not verify_cache(index)
    first = {p: os.stat(p).st_mtime_ns for p in index.array_path}
    again, _ = cache_images(images, pd.DataFrame(), root, tmp_path / "cache", 32, workers=1)
    assert {p: os.stat(p).st_mtime_ns for p in again.array_path} == first  # nothing recomputed
    assert cache_key(32) != cache_key(64)
    with open(index.array_path[0], "r+b") as fh:  # damage one file
        fh.truncate(20)
    assert [i for i, _ in verify_cache(index)] == ["im0"]


def test_bad_file_stops_unless_keep_going_and_is_listed(tmp_path):
    root, images = _dataset(tmp_path)
    (root / "im2.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="--keep-going"):
        cache_images(images, pd.DataFrame(), root, tmp_path / "cache", 32, workers=1)
    index, skipped = cache_images(images, pd.DataFrame(), root, tmp_path / "cache", 32, workers=1, keep_going=True)
    assert [i for i, _ in skipped] == ["im2"] and "im2.png" in skipped[0][1]
    assert sorted(index.image_id) == ["im0", "im1", "im3"]  # what was cached before the error is kept


@pytest.mark.parametrize("setting", ["0", "1"])
def test_progress_bar_follows_mammo_progress(tmp_path, monkeypatch, capsys, setting):
    monkeypatch.setenv("MAMMO_PROGRESS", setting)
    root, images = _dataset(tmp_path, n=2)
    cache_images(images, pd.DataFrame(), root, tmp_path / "cache", 32, workers=1)
    assert ("preprocess t @32px" in capsys.readouterr().err) == (setting == "1")
