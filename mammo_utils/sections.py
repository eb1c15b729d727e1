"""The sections of the settings, one frozen dataclass each, with every default's reason beside it.

:class:`mammo_utils.config.Config` holds one of each; :mod:`mammo_utils.profiles` says what each profile changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from mammo_utils.errors import ConfigError

TASKS = ("abnormal", "malignant")  # "abnormal": any finding; "malignant": cancer vs not cancer


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
class CropsConfig:
    """Crops at the film's own scale (``mammo_utils.prepare.crops``): what stage 02 pretrains on, and stage 03's
    crop task (is there a lesion in this crop?)."""

    # The films crops are cut from: each film's breast scaled to this side (MIAS: about 400 µm a pixel, where the
    # median lesion keeps a radius of about 20 px; whole films for the network are image_size_px).
    film_size_px: int = 512
    size_px: int = 64  # side of a crop, and of the network's input in stages 02 and 03's crop task
    per_site: int = 4  # labelled crops around each located finding, shifted by up to a quarter side
    per_normal_film: int = 4  # labelled crops at random points of each normal film's breast


@dataclass(frozen=True)
class ViewsConfig:
    """The two views of a region of the breast (``mammo_utils.pretrain.views``); each default has its reason."""

    region_scale: float = 1.5  # a region is this many crop sides wide; both views are cut from it, so they overlap
    scale: tuple[float, float] = (0.3, 1.0)  # area of the region a view keeps (SimCLR's 0.08 loses the lesion)
    ratio: tuple[float, float] = (0.75, 1.33)  # aspect of a view, log-uniform (torchvision's RandomResizedCrop)
    hflip_prob: float = 0.5  # a crop of breast tissue has no left or right,
    vflip_prob: float = 0.5  # no up or down,
    rot90_prob: float = 0.5  # and no preferred quarter turn
    brightness: float = 0.2  # exposure differs between machines and exams
    contrast: float = 0.2
    gamma: tuple[float, float] = (0.8, 1.25)  # detector response curves differ
    blur_prob: float = 0.5  # SimCLR's blur; sigma in pixels of the crop (calcifications are a few pixels wide)
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise_std: float = 0.02  # the detector's electronic noise, independent of the signal


@dataclass(frozen=True)
class AugmentConfig:
    """The light augmentation of supervised fine-tuning (``mammo_utils.finetune.augment``), films and crops."""

    crop_scale: tuple[float, float] = (0.8, 1.0)  # a mild crop: the lesion stays in view
    crop_ratio: tuple[float, float] = (0.75, 1.33)
    hflip_prob: float = 0.5  # left and right breasts are mirror images
    rotation_deg: float = 10.0  # positioning varies by a few degrees between exams


@dataclass(frozen=True)
class PretrainConfig:
    """Self-supervised pretraining (``mammo_utils.pretrain``): the method, and how long and how it trains."""

    method: str = "simclr"  # simclr (the paper's) | moco (MoCo v2: a queue of negatives, a momentum encoder)
    steps: int = 1000  # optimisation steps of each backbone
    epochs: int = 10  # the monitor's points: an epoch is steps / epochs steps of new regions
    batch_size: int = 128  # regions per step (pairs of views): 2N - 1 = 255 candidates per view
    temperature: float = 0.2  # NT-Xent's tau (lightly's SimCLR benchmark uses 0.1, its MoCo v2 0.2; see README)
    optimizer: str = "adamw"  # adamw | sgd | lars
    lr: float = 1e-3  # base rate; scaled by batch_size / 256 for sgd and lars (Goyal et al. 2017)
    weight_decay: float = 1e-4
    warmup_steps: int = 50  # linear warm-up, then cosine decay to zero (lightly's CosineWarmupScheduler)
    hidden_dim: int = 512
    output_dim: int = 128
    knn_k: int = 10
    memory_bank_size: int = 4096  # moco only: queue length, in whole batches
    momentum: float = 0.996  # moco only: momentum encoder's start value, raised to 1 on a cosine schedule


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning (``mammo_utils.finetune``): whole films (the headline classifier of stages 04 and 05) and the
    crop task (the label-efficiency experiment: does pretraining help where labels are few?)."""

    epochs: int = 20  # films: passes over the labelled films; crops: validations along a run
    batch_size: int = 32
    limit_batches: float | int = 1.0
    lr: float = 1e-3
    backbone_lr_factor: float = 0.1  # full fine-tuning: the backbone moves ten times slower than the head
    weight_decay: float = 1e-4
    classifier: str = "full"  # full (every layer trains) | linear (a probe on frozen features): the film headline
    inits: tuple[str, ...] = ("simclr", "random")
    label_fraction: float = 1.0  # of the training women, for the film headline
    # Cross-validation by patient (k = split.n_folds) of the headline recipe, beside the manifest split. Skipped
    # where the dataset has an official test split (CBIS-DDSM), which is then the only honest test.
    cv: bool = False
    # Tasks of the film headline (and of its cross-validation), beside the paper's claim (which names no task). The
    # top-level ``task`` always runs and is the one stage 05 explains; the others add a run per init (and folds).
    tasks: tuple[str, ...] = ("abnormal", "malignant")
    # The crop task (mammo_utils.finetune.crops): classifiers x fractions of the training women (stratified, nested)
    # x draws of those women; full fine-tuning, the costly one, at full_fractions with full_draws each.
    classifiers: tuple[str, ...] = ("linear", "full")
    label_fractions: tuple[float, ...] = (0.05, 0.1, 0.25, 1.0)
    draws: int = 10
    full_fractions: tuple[float, ...] = (0.1, 1.0)
    full_draws: int = 1
    crop_steps: int = 100  # optimisation steps of every full fine-tuning of crops, the same at every fraction
    # Linear probe: full-batch epochs of the head on frozen features; the epoch kept is the best on val ROC AUC.
    linear_epochs: int = 300
    linear_lr: float = 1e-2  # on standardised features, so one rate suits every backbone

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in TASKS]
        if bad:
            raise ConfigError(f"Unknown finetune.tasks value {bad[0]!r}. Choose from: {', '.join(TASKS)}.")
        for name, values in (("classifier", (self.classifier,)), ("classifiers", self.classifiers)):
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
    # A2's two copy strengths: "finetune", the project's fine-tuning augmentation (a crop of 80-100% with the
    # aspect changed, a flip half the time, up to 10 degrees: a copy that is not a near-duplicate), and "offline",
    # the offline augmentation of public pre-augmented mammography sets (a flip, a small shift, noise), below.
    copy_strengths: tuple[str, ...] = ("finetune", "offline")
    offline_flip_prob: float = 0.5  # a horizontal flip (a left breast turned into a right one)
    offline_shift: float = 0.03  # the largest shift, as a share of the side, in x and in y
    offline_noise_sd: float = 0.02  # Gaussian noise on grey levels in [0, 1]
    # The random-label control: every arm and every model again with the labels permuted among women (each
    # woman keeps one label across her films, copies and patches), a fresh permutation per seed.
    label_sets: tuple[str, ...] = ("real", "random")
    patches_per_site: int = 4  # overlapping patches (crops.size_px, cut from the films at crops.film_size_px)
    normal_sites_per_film: int = 1  # bright spots of each normal film that give normal-tissue patches
    patch_match_sd: bool = True  # each normal patch's bright spot chosen so that its SD matches a lesion patch's
    # Logistic regression on frozen features: C fixed in advance (scikit-learn's default, not tuned), and the
    # iteration counts at which it may stop (its "epochs": chosen on validation, or on test in A4 and A5).
    logistic_c: float = 1.0
    lr_iterations: tuple[int, ...] = (2, 5, 10, 20, 50, 100)
    a4_configs: int = 24  # N: epoch x seed configurations that A4 and A5 choose among on the test fold
    pixels_px: int = 32  # the side at which 1-nearest-neighbour and the CNN read raw pixels
    # The memorising CNN (mammo_utils.protocols.cnn): trained from random weights on the raw pixels until it fits
    # its training items (accuracy >= cnn_fit_accuracy) or cnn_max_epochs; one cross-validation per seed for the
    # first cnn_seeds seeds, every item tested exactly once in each. On the film arms, for each K in cnn_copies
    # (empty: no CNN).
    cnn_copies: tuple[int, ...] = (1, 2, 4, 8)
    cnn_seeds: int = 1
    cnn_width: int = 16  # channels of its first convolution (doubled twice)
    cnn_fit_accuracy: float = 0.99
    cnn_max_epochs: int = 150
    cnn_batch_size: int = 64
    cnn_lr: float = 3e-3

    def __post_init__(self) -> None:
        for name in ("copies", "lr_iterations", "cnn_copies"):  # overrides arrive as strings
            raw = getattr(self, name)
            values = tuple(sorted({int(v) for v in raw if str(v).strip()}))
            if (not values and name != "cnn_copies") or (values and values[0] < 1):
                raise ConfigError(f"protocols.{name} must be positive integers, got {raw!r}.")
            object.__setattr__(self, name, values)
        if int(self.cnn_seeds) < 1 or int(self.cnn_seeds) > int(self.seeds):
            raise ConfigError(f"protocols.cnn_seeds must be between 1 and protocols.seeds ({self.seeds}), "
                              f"got {self.cnn_seeds!r}.")
        unknown = set(self.copy_strengths) - {"finetune", "offline"} | set(self.label_sets) - {"real", "random"}
        if unknown or not self.copy_strengths or "real" not in self.label_sets:
            raise ConfigError(f"protocols.copy_strengths takes finetune and/or offline, protocols.label_sets real "
                              f"and optionally random; got {self.copy_strengths!r} and {self.label_sets!r}.")
