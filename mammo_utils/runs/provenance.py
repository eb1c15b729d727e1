"""What a run records about itself, so that a number can be traced to the code, settings and machine behind it."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mammo_utils.config import Config

PACKAGES = ("torch", "torchvision", "lightly", "pytorch-lightning", "pydicom", "scikit-learn", "grad-cam", "numpy")


def git_revision() -> str:
    """The repository's short revision, ``+dirty`` when tracked files have changed; ``unknown`` outside git."""
    try:
        root = Path(__file__).resolve().parents[2]  # the repository
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (out.stdout.strip() or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    """The versions of the libraries that decide the numbers, and Python's."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    found["python"] = platform.python_version()
    return found


def hardware() -> dict:
    """CPU model and core count, and the GPU when one is used (for the report's "machine" line)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cpu_count": os.cpu_count()}
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    except Exception:  # noqa: BLE001 -- provenance must never fail a run
        pass
    return info


def provenance(cfg: Config) -> dict:
    """Settings, seed, revision, versions and machine of a run: what every ``stage.json`` and results file holds."""
    from mammo_utils.runs.devices import cpu_flags, placement

    where = placement(cfg)
    info = {**hardware(), "placement": where.describe(), "precision": where.precision,
            "cpu_bf16_flags": sorted({"avx512_bf16", "amx_bf16"} & cpu_flags())}
    return {"config": cfg.to_dict(), "seed": cfg.seed, "git_revision": git_revision(), "versions": versions(),
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "hardware": info}
