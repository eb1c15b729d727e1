"""Stage bookkeeping: a stage whose inputs and settings have not changed is not run again."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from .config import Config
from .paths import atomic_write_json

PACKAGES = ("torch", "torchvision", "lightly", "pytorch-lightning", "pydicom", "scikit-learn", "grad-cam", "numpy")


def is_done(folder: Path, key: str, outputs: list[str]) -> bool:
    """True when ``folder/stage.json`` records ``key`` and every output file exists."""
    marker = Path(folder) / "stage.json"
    if not marker.exists() or not all((Path(folder) / o).exists() for o in outputs):
        return False
    try:
        return json.loads(marker.read_text()).get("key") == key
    except (OSError, json.JSONDecodeError):
        return False


# The stages each stage reads: its key includes theirs, so a change upstream re-runs everything downstream.
UPSTREAM = {"prepare": (), "pretrain": ("prepare",), "finetune": ("prepare", "pretrain"),
            "evaluate": ("finetune",), "explain": ("finetune", "evaluate")}
UPSTREAM["protocols"] = ("prepare", "pretrain")  # the study reuses stage 02's per-fold backbones


def stage_key(cfg: Config, stage: str, sections: tuple[str, ...]) -> str:
    """The key a stage's ``stage.json`` records: a hash of its own settings (``sections``) and of the keys of
    the stages it reads (:data:`UPSTREAM`, as their ``stage.json`` files record them)."""
    import hashlib

    from .paths import stage_dir

    upstream = {}
    for name in UPSTREAM[stage]:
        marker = stage_dir(cfg, name, create=False) / "stage.json"
        try:
            upstream[name] = json.loads(marker.read_text()).get("key", "")
        except (OSError, json.JSONDecodeError):
            upstream[name] = ""  # not run yet: the stage will say so when it reads the missing output
    blob = json.dumps({"own": cfg.section_hash(*sections), "upstream": upstream}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def begin(cfg: Config, stage: str) -> Path:
    """What a stage does when it is going to run: create its folder, delete what a killed run left half-written
    there, and set up the CPU (:func:`mammo_utils.devices.cpu_speedups`). Returns the folder."""
    from .devices import cpu_speedups
    from .paths import remove_stale_temporaries, stage_dir

    out = stage_dir(cfg, stage)
    remove_stale_temporaries(out)
    cpu_speedups(cfg)
    return out


def mark_done(folder: Path, key: str, cfg: Config, **extra) -> None:
    """Record that the stage finished, with what is needed to reproduce it."""
    atomic_write_json(Path(folder) / "stage.json", {"key": key, **provenance(cfg), **extra})


def git_revision() -> str:
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (out.stdout.strip() or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
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
    from .devices import cpu_flags, placement

    info = {**hardware(), "placement": placement(cfg).describe(), "precision": placement(cfg).precision,
            "cpu_bf16_flags": sorted({"avx512_bf16", "amx_bf16"} & cpu_flags())}
    return {"config": cfg.to_dict(), "seed": cfg.seed, "git_revision": git_revision(), "versions": versions(),
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "hardware": info}
