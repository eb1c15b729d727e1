"""Every setting of a run in one frozen :class:`Config`: its sections (:mod:`mammo_utils.sections`), the profile's
values (:mod:`mammo_utils.profiles`), environment variables and overrides, validated.

Precedence, lowest first: the defaults, the profile's values, then ``MAMMO_*`` environment variables, then
explicit arguments (notebook ``parameters`` cell or CLI flags), then ``overrides`` of the form
``"pretrain.steps=300"``. Building a configuration never looks at the hardware: the same profile gives the same
settings, and the same stage keys, on every machine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mammo_utils.errors import ConfigError
from mammo_utils.prepare.sources import DATASETS
from mammo_utils.pretrain.methods import INITS, METHODS
from mammo_utils.profiles import profile_values
from mammo_utils.sections import (
    TASKS,
    AugmentConfig,
    CropsConfig,
    EvaluateConfig,
    FinetuneConfig,
    GradcamConfig,
    PretrainConfig,
    ProtocolsConfig,
    SplitConfig,
    SyntheticConfig,
    ViewsConfig,
)

PROFILES = ("smoke", "demo", "full")
# Lightning's names (``cuda`` is accepted for ``gpu``); ``auto`` lets mammo_utils.runs.devices choose per machine.
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")


@dataclass(frozen=True)
class Config:
    """Every setting of a run. Build it with :func:`load_config`."""

    profile: str = "demo"
    dataset: str = "synthetic"
    # A named variant of the run (e.g. "tau0.5"): its outputs go to runs/<profile>-<dataset>-<variant>/, beside
    # the first run's instead of over them (the notebooks' ablation exercises use it).
    variant: str = ""
    task: str = "abnormal"
    seed: int = 0
    image_size_px: int = 224  # the side of a whole film as the network sees it
    backbone: str = "resnet50"  # resnet50 (the paper's) | resnet18 (the laptop demo's: a third of the cost)
    data_dir: str = "data"
    runs_dir: str = "runs"
    cache_dir: str = ""
    sources_dir: str = ""
    num_workers: int = 0
    precision: str = "auto"  # one of PRECISIONS
    accelerator: str = "auto"  # one of ACCELERATORS
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    gradcam: GradcamConfig = field(default_factory=GradcamConfig)
    protocols: ProtocolsConfig = field(default_factory=ProtocolsConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def all_tasks(self) -> tuple[str, ...]:
        """``task`` first, then the other ``finetune.tasks``."""
        return (self.task, *(t for t in self.finetune.tasks if t != self.task))

    def for_task(self, task: str) -> Config:
        """The same settings for another task."""
        return dataclasses.replace(self, task=task)

    def section_hash(self, *sections: str) -> str:
        """A short hash of the named top-level settings; a stage re-runs when its hash changes."""
        d = self.to_dict()
        blob = json.dumps({k: d[k] for k in sections}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _sections(values: dict[str, Any]) -> dict[str, Any]:
    """A profile's values as :class:`Config` arguments: a dict given for a section becomes that section."""
    classes = {f.name: f.default_factory for f in fields(Config) if f.default_factory is not dataclasses.MISSING}
    return {k: classes[k](**v) if k in classes and isinstance(v, dict) else v for k, v in values.items()}


def _coerce(value: str, annotation: str) -> Any:
    """Turn an override string into the type its setting declares (``annotation``, e.g. ``"float | int"``).

    ``float | int`` (Lightning's batch limits: an int counts batches, a float is a fraction) keeps an integer an
    int; ``int | str`` (``devices``: a count or ``auto``) keeps a word a word.
    """
    kinds = {k.strip() for k in annotation.split("|")}
    if "bool" in kinds:
        if value.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError("expected true or false")
        return value.lower() in ("1", "true", "yes", "on")
    if annotation.startswith("tuple"):
        parts = [p.strip() for p in value.replace("(", "").replace(")", "").split(",") if p.strip()]
        if "float" in annotation:
            return tuple(float(p) for p in parts)
        return tuple(int(p) for p in parts) if "int" in annotation else tuple(parts)
    if "int" in kinds:
        try:
            return int(value)
        except ValueError:
            if "float" in kinds:
                return float(value)
            if "str" in kinds:
                return value
            raise ValueError("expected a whole number") from None
    if "float" in kinds:
        return float(value)
    return value


def _replace(obj: Any, name: str, value: str, key: str) -> Any:
    """``obj`` with field ``name`` set from the override string ``value`` (``key`` names it in errors)."""
    annotation = {f.name: str(f.type) for f in fields(obj)}[name]
    try:
        return replace(obj, **{name: _coerce(value, annotation)})
    except ValueError as exc:
        raise ConfigError(f"Setting {key}={value!r} is not a valid value: {exc}.") from None


def _apply_override(cfg: Config, key: str, value: str) -> Config:
    parts = key.split(".")
    if len(parts) == 1:
        names = {f.name for f in fields(cfg)}
        if key not in names:
            raise ConfigError(f"Unknown setting {key!r}. Known settings: {', '.join(sorted(names))}.")
        return _replace(cfg, key, value, key)
    if len(parts) != 2 or not hasattr(cfg, parts[0]) or not dataclasses.is_dataclass(getattr(cfg, parts[0])):
        raise ConfigError(f"Unknown setting {key!r}. Use SECTION.NAME, e.g. pretrain.epochs=3.")
    section = getattr(cfg, parts[0])
    names = {f.name for f in fields(section)}
    if parts[1] not in names:
        raise ConfigError(f"Unknown setting {key!r}. Known in {parts[0]}: {', '.join(sorted(names))}.")
    return replace(cfg, **{parts[0]: _replace(section, parts[1], value, key)})


def show_progress() -> bool:
    """Progress bars are drawn unless ``MAMMO_PROGRESS=0`` (the tests and benchmarks set it)."""
    return os.environ.get("MAMMO_PROGRESS", "1") != "0"


def load_config(
    profile: str | None = None,
    dataset: str | None = None,
    overrides: dict[str, str] | list[str] | None = None,
    **settings: Any,
) -> Config:
    """Build the configuration of a run.

    Args:
        profile: ``smoke`` (tests, seconds), ``demo`` (a laptop CPU, minutes) or ``full`` (a GPU).
            Defaults to ``MAMMO_PROFILE`` or ``demo``.
        dataset: one of :data:`DATASETS`. Defaults to ``MAMMO_DATASET`` or ``synthetic``.
        overrides: ``{"pretrain.epochs": "3"}`` or ``["pretrain.epochs=3"]``; also read from
            ``MAMMO_OVERRIDES`` (space-separated).
        **settings: top-level settings (``task``, ``seed``, ``data_dir``, ...); ``None`` values are ignored.
    """
    profile = profile or os.environ.get("MAMMO_PROFILE") or "demo"
    dataset = dataset or os.environ.get("MAMMO_DATASET") or "synthetic"
    if profile not in PROFILES:
        raise ConfigError(f"Unknown profile {profile!r}. Choose one of: {', '.join(PROFILES)} (MAMMO_PROFILE).")
    if dataset not in DATASETS:
        raise ConfigError(f"Unknown dataset {dataset!r}. Choose one of: {', '.join(DATASETS)} (MAMMO_DATASET).")
    cfg = Config(profile=profile, dataset=dataset, **_sections(profile_values(profile, dataset)))

    env = {
        "task": "MAMMO_TASK",
        "seed": "MAMMO_SEED",
        "data_dir": "MAMMO_DATA_DIR",
        "runs_dir": "MAMMO_RUNS_DIR",
        "cache_dir": "MAMMO_CACHE_DIR",
        "sources_dir": "MAMMO_SOURCES_DIR",
        "num_workers": "MAMMO_NUM_WORKERS",
        "precision": "MAMMO_PRECISION",
    }
    for key, var in env.items():
        if os.environ.get(var):
            cfg = _apply_override(cfg, key, os.environ[var])
    for key, value in settings.items():
        if value is not None:
            cfg = _apply_override(cfg, key, str(value))

    items = os.environ.get("MAMMO_OVERRIDES", "").split()
    items += [f"{k}={v}" for k, v in overrides.items()] if isinstance(overrides, dict) else list(overrides or [])
    for item in items:
        if "=" not in item:
            raise ConfigError(f"Override {item!r} must look like SECTION.NAME=VALUE, e.g. pretrain.epochs=3.")
        key, value = item.split("=", 1)
        cfg = _apply_override(cfg, key.strip(), value.strip())

    if cfg.task not in TASKS:
        raise ConfigError(f"Unknown task {cfg.task!r}. Choose one of: {', '.join(TASKS)} (MAMMO_TASK).")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision {cfg.precision!r}. Choose one of: {', '.join(PRECISIONS)} "
                          "(MAMMO_PRECISION or --set precision=...).")
    if cfg.accelerator not in ACCELERATORS:
        raise ConfigError(f"Unknown accelerator {cfg.accelerator!r}. Choose one of: {', '.join(ACCELERATORS)} "
                          "(--set accelerator=...).")
    if cfg.backbone not in ("resnet18", "resnet50"):
        raise ConfigError(f"Unknown backbone {cfg.backbone!r}. Choose resnet18 or resnet50.")
    if cfg.pretrain.optimizer not in ("adamw", "sgd", "lars"):
        raise ConfigError(f"Unknown pretrain.optimizer {cfg.pretrain.optimizer!r}. Choose adamw, sgd or lars.")
    if cfg.pretrain.method not in METHODS:
        raise ConfigError(f"Unknown pretrain.method {cfg.pretrain.method!r}. Choose one of: {', '.join(METHODS)}.")
    profile_inits = tuple(profile_values(profile, dataset).get("finetune", {}).get("inits", FinetuneConfig.inits))
    if cfg.pretrain.method != "simclr" and cfg.finetune.inits == profile_inits:
        # The profile's inits name the default method; follow the method chosen instead.
        inits = tuple(cfg.pretrain.method if i == "simclr" else i for i in cfg.finetune.inits)
        cfg = replace(cfg, finetune=replace(cfg.finetune, inits=inits))
    for init in cfg.finetune.inits:
        if init not in INITS:
            raise ConfigError(f"Unknown finetune init {init!r}. Choose from {', '.join(INITS)}.")
        if init in METHODS and init != cfg.pretrain.method:
            wanted = ",".join(cfg.pretrain.method if i == init else i for i in cfg.finetune.inits)
            raise ConfigError(f"finetune.inits has {init!r}, but stage 02 pretrains with {cfg.pretrain.method!r} "
                              f"(pretrain.method). Use --set finetune.inits={wanted}.")
    if cfg.variant and not all(c.isalnum() or c in "._" for c in cfg.variant):
        raise ConfigError(f"variant {cfg.variant!r} names a folder: use letters, digits, '.' and '_' only.")
    # Relative directories are relative to the project folder, so notebooks (run from notebooks/) and the
    # CLI (run from anywhere) share one data and runs folder.
    cfg = replace(cfg, data_dir=_absolute(cfg.data_dir), runs_dir=_absolute(cfg.runs_dir))
    cfg = replace(cfg, cache_dir=_absolute(cfg.cache_dir) if cfg.cache_dir else str(Path(cfg.data_dir) / "cache"))
    if cfg.sources_dir:
        cfg = replace(cfg, sources_dir=_absolute(cfg.sources_dir))
    return cfg


def project_root() -> Path:
    """The folder holding pyproject.toml (a source checkout), else the current directory."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def _absolute(path: str) -> str:
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (project_root() / p).resolve())
