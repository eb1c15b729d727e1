"""The embedded synthetic dataset: generated on first use into ``<data dir>/synthetic/``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from mammo_utils.config import Config, show_progress
from mammo_utils.prepare.manifest import IMAGE_COLUMNS, LESION_COLUMNS
from mammo_utils.prepare.split import assign_splits
from mammo_utils.prepare.synthetic import generate_patient
from mammo_utils.runs.files import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

NAME = "synthetic"
BIRADS = {None: "1", "circumscribed": "3", "calcification": "4a", "spiculated": "5"}


def _png16(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(array, 0, 1) * 65535).astype(np.uint16)).save(buf, format="PNG")
    return buf.getvalue()


def _settings(cfg: Config) -> dict:
    s = cfg.synthetic
    return {"seed": cfg.seed, "n_patients": s.n_patients, "size_px": s.size_px,
            "abnormal_fraction": s.abnormal_fraction, "version": 1}


def locate(cfg: Config) -> Path:
    """Generate the images (once per settings) and return the dataset root."""
    s = cfg.synthetic
    root = Path(cfg.data_dir) / NAME / f"n{s.n_patients}-s{s.size_px}-seed{cfg.seed}"
    done = root / "generated.json"
    if done.exists():
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    images, lesions = [], []
    for index in tqdm(range(s.n_patients), desc="synthetic patients", unit="patient", disable=not show_progress()):
        patient = generate_patient(cfg.seed, index, s.size_px, s.abnormal_fraction)
        for image_id, img in patient.images:
            path = f"images/{image_id}.png"
            if not (root / path).exists():  # resumable: a killed run keeps what it wrote
                atomic_write_bytes(root / path, _png16(img.pixels))
            lesion_type = img.lesions[0].lesion_type if img.lesions else None
            images.append(dict(
                image_id=image_id, patient_id=patient.patient_id, dataset=NAME, path=path,
                laterality=img.laterality, view=img.view, density=img.density, abnormal=img.abnormal,
                malignant=img.malignant, birads=BIRADS[lesion_type], source_label=lesion_type or "normal",
                split="", fold="", width=s.size_px, height=s.size_px,
            ))
            for k, les in enumerate(img.lesions):
                mask_path = f"masks/{image_id}_{k}.png"
                if not (root / mask_path).exists():
                    atomic_write_bytes(root / mask_path, _png16(les.mask.astype(np.float32)))
                ys, xs = np.nonzero(les.mask)
                lesions.append(dict(
                    image_id=image_id, lesion_id=f"{image_id}_{k}", kind=les.kind, severity=les.severity,
                    shape="mask", cx=round(les.cx, 1), cy=round(les.cy, 1), r=round(les.r, 1),
                    x0=int(xs.min()), y0=int(ys.min()), x1=int(xs.max()), y1=int(ys.max()), mask_path=mask_path,
                ))
    pd.DataFrame(images, columns=IMAGE_COLUMNS).to_csv(root / "images_raw.csv", index=False)
    pd.DataFrame(lesions, columns=LESION_COLUMNS).to_csv(root / "lesions_raw.csv", index=False)
    atomic_write_json(done, _settings(cfg))
    return root


def build_manifest(root: Path, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The manifest of the generated images, with a patient-level stratified split and folds."""
    images = pd.read_csv(root / "images_raw.csv", dtype={"birads": str, "density": str}, keep_default_na=False)
    lesions = pd.read_csv(root / "lesions_raw.csv", keep_default_na=False)
    images = assign_splits(images, cfg.split.val_fraction, cfg.split.test_fraction, cfg.split.n_folds, cfg.seed)
    return images, lesions
