"""Settings in one place: profiles (smoke / demo / full) as frozen dataclasses, with env and CLI overrides.

Precedence, lowest first: the profile's values, then ``MAMMO_*`` environment variables, then explicit
arguments (notebook ``parameters`` cell or CLI flags), then ``overrides`` of the form ``"pretrain.epochs=3"``.
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

PROFILES = ("smoke", "demo", "full")
TASKS = ("abnormal", "malignant")
# Lightning's names (``cuda`` is accepted for ``gpu``); ``auto`` lets mammo_utils.runs.devices choose per machine.
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")


@dataclass(frozen=True)
class SyntheticConfig:
    """The embedded synthetic dataset (``mammo_utils.prepare.synthetic``)."""

    n_patients: int = 100
    images_per_patient: int = 4  # L/R x CC/MLO, as in a screening exam
    size_px: int = 256  # generated size; preprocessing resizes to ``image_size_px``
    abnormal_fraction: float = 0.5  # patients with at least one lesion


@dataclass(frozen=True)
class SplitConfig:
    val_fraction: float = 0.15
    test_fraction: float = 0.25
    n_folds: int = 5


@dataclass(frozen=True)
class AugmentConfig:
    """The two SimCLR views (``mammo_utils.pretrain.views``). Each default has its reason beside it."""

    crop_scale: tuple[float, float] = (0.35, 1.0)  # lesions are small: very small crops often miss them all
    crop_ratio: tuple[float, float] = (0.75, 1.33)  # mild aspect change, breasts are not stretched much
    hflip_prob: float = 0.5  # left and right breasts are mirror images
    vflip_prob: float = 0.0  # the nipple-to-chest-wall anatomy has an up/down asymmetry on MLO views
    rotation_deg: float = 10.0  # positioning varies by a few degrees between exams
    brightness: float = 0.2  # exposure differs between machines and exams
    contrast: float = 0.2
    gamma: tuple[float, float] = (0.8, 1.25)  # detector response curves differ
    blur_prob: float = 0.5  # SimCLR's blur, milder: calcifications are only a few pixels wide
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise_std: float = 0.02  # quantum noise of a low-dose exposure


@dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised pretraining (``mammo_utils.pretrain.stage``; the methods are in ``mammo_utils.pretrain.methods``)."""

    method: str = "simclr"  # simclr (the paper's) | moco (MoCo v2: a queue of negatives, a momentum encoder)
    epochs: int = 10
    batch_size: int = 64
    limit_batches: float | int = 1.0  # Lightning's limit_train_batches (1.0 = all)
    temperature: float = 0.2  # NT-Xent temperature (SimCLR used 0.1-0.5; 0.2 is lightly's benchmark value)
    optimizer: str = "adamw"  # adamw | sgd | lars
    lr: float = 1e-3  # base rate; scaled by batch_size / 256 for sgd and lars (Goyal et al. 2017)
    weight_decay: float = 1e-6
    warmup_epochs: int = 0
    hidden_dim: int = 2048
    output_dim: int = 128
    knn_k: int = 10
    memory_bank_size: int = 4096  # moco only: queue length, capped below the number of training images
    momentum: float = 0.996  # moco only: momentum encoder's start value, raised to 1 on a cosine schedule


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning (``mammo_utils.finetune.stage``)."""

    epochs: int = 20
    batch_size: int = 32
    limit_batches: float | int = 1.0
    lr: float = 1e-3
    backbone_lr_factor: float = 0.1  # full fine-tuning: the backbone moves ten times slower than the head
    weight_decay: float = 1e-4
    protocol: str = "full"  # full | linear (the headline run, the one stages 04 and 05 explain)
    inits: tuple[str, ...] = ("simclr", "random")
    label_fraction: float = 1.0
    # Label-efficiency sweep (mammo_utils.finetune.sweep): every init x protocol x fraction of the training
    # women (stratified, seeded, nested), ``sweep_seeds`` seeds per point. An empty ``protocols`` turns it off.
    protocols: tuple[str, ...] = ("linear", "full")
    label_fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    sweep_seeds: int = 3
    # Optimisation steps of every full fine-tuning point, the same at every fraction so that a point measures
    # labels, not compute (0: the headline recipe's steps on all the training women).
    sweep_steps: int = 0
    # Fractions for the full protocol only (empty: ``label_fractions``). Full fine-tuning is the costly half of
    # the sweep; narrow it here when time is short (e.g. --set finetune.full_fractions=0.1,1.0).
    full_fractions: tuple[float, ...] = ()
    # Linear probe: full-batch epochs of the head on frozen features; the epoch kept is the best on val ROC AUC.
    linear_epochs: int = 300
    linear_lr: float = 1e-2  # on standardised features, so one rate suits every backbone
    # Cross-validation by patient (k = split.n_folds) of the headline recipe, beside the manifest split. Skipped
    # where the dataset has an official test split (CBIS-DDSM), which is then the only honest test.
    cv: bool = False
    # Tasks of the headline recipe (and of its cross-validation), for the table that sets our numbers beside
    # the paper's claim (which names no task). The top-level ``task`` always runs and is the one the sweep,
    # the figures of stage 04 and stage 05 use; the others add one headline run per init (and their folds).
    tasks: tuple[str, ...] = ("abnormal", "malignant")

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ConfigError(f"Unknown finetune.tasks value {bad[0]!r}. Choose from: {', '.join(TASKS)}.")
        for name, values in (("protocol", (self.protocol,)), ("protocols", self.protocols)):
            bad = [v for v in values if v not in ("full", "linear")]
            if bad:
                raise ConfigError(f"Unknown finetune.{name} value {bad[0]!r}. Choose full or linear.")
        for name, values in (("label_fraction", (self.label_fraction,)), ("label_fractions", self.label_fractions),
                             ("full_fractions", self.full_fractions)):
            bad = [v for v in values if not 0 < float(v) <= 1]
            if bad:
                raise ConfigError(f"finetune.{name} value {bad[0]} must be in (0, 1].")


@dataclass(frozen=True)
class EvaluateConfig:
    bootstrap_resamples: int = 1000
    ci_level: float = 0.95


@dataclass(frozen=True)
class GradcamConfig:
    """Stage 05 (``mammo_utils.gradcam``): which CAM methods, and how many test films are drawn."""

    n_images: int = 8
    cams: tuple[str, ...] = ("gradcam", "gradcam++", "eigencam")  # names of mammo_utils.gradcam.cams.CAM_METHODS


@dataclass(frozen=True)
class ProtocolsConfig:
    """The protocol study (``mammo_utils.protocols``, notebook 06): what the split and the choices made on test
    do to the number, on the same films with the same backbones. Every value is fixed before any result."""

    # Run by `reproduce` (after notebook 05) when enabled: at smoke where the dataset registry says cross_validate
    # (MIAS, INbreast; CI's real-MIAS run), elsewhere when asked. `python -m mammo_utils protocols`, `make
    # protocols` and notebook 06 run it whenever they are asked to.
    enabled: bool = False
    seeds: int = 5  # every arm is cross-validated once per seed; the table gives mean and spread over them
    copies: tuple[int, ...] = (1, 2, 4, 8)  # A2: augmented copies per film made before the split (K)
    patch_size_px: int = 64  # A3: side of a patch in the film's own pixels (native resolution)
    patches_per_site: int = 4  # overlapping patches around each lesion / bright spot
    normal_sites_per_film: int = 1  # bright spots of each normal film that give normal-tissue patches
    # Logistic regression on frozen features: C fixed in advance (scikit-learn's default, not tuned), and the
    # iteration counts at which it may stop (its "epochs": chosen on validation, or on test in A4 and A5).
    logistic_c: float = 1.0
    lr_iterations: tuple[int, ...] = (2, 5, 10, 20, 50, 100)
    a4_configs: int = 24  # N: epoch x seed configurations that A4 and A5 choose among on the test fold
    # May the study pretrain the per-fold backbones it needs (patch SimCLR; film SimCLR where stage 02 has
    # none)? Off at smoke, where those rows are then left out with a reason.
    pretrain_folds: bool = True
    patch_pretrain_epochs: int = 5
    # The fine-tuned CNN (fit_full) at a small size: one training per seed (seed s tests fold s).
    cnn_seeds: int = 5
    cnn_steps: int = 60
    cnn_checks: int = 6  # validations along the way; the best one's weights are kept (the epoch choice)
    cnn_size_px: int = 64  # whole films are shrunk to this for the CNN; patches keep their native size
    cnn_copies: int = 4  # the K of A2 under the CNN
    cnn_inits: tuple[str, ...] = ("random",)  # of the whole-film CNN (A3b's CNN runs both inits)

    def __post_init__(self) -> None:
        for name in ("copies", "lr_iterations"):  # overrides arrive as strings
            values = tuple(sorted({int(v) for v in getattr(self, name)}))
            if not values or values[0] < 1:
                raise ConfigError(f"protocols.{name} must be positive integers, got {getattr(self, name)!r}.")
            object.__setattr__(self, name, values)


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
    image_size_px: int = 224
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
    if cfg.finetune.protocol not in ("full", "linear"):
        raise ConfigError(f"Unknown finetune.protocol {cfg.finetune.protocol!r}. Choose full or linear.")
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
